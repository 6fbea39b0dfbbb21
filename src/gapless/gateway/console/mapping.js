// Camera mapping (docs/design/identity.md): which camera of one independent recorder is which of
// another, each proposal with its confidence, reasons and conflicts; accept, reject, accept every
// exact match at once; and the pairs accepted. Changing pairs changes the configuration: admins only.

import { $, api, cell, element, me, status } from "./console.js";

let sides = null; // [a, b] recorder ids chosen

function configureButton(label, act) {
  const button = element("button", { textContent: label, className: "action", disabled: !me.may_configure });
  button.title = me.may_configure ? "" : "admins only";
  button.onclick = async () => {
    button.disabled = true;
    try {
      status(await act());
      await mapping(false);
    } catch (problem) {
      status(String(problem.message || problem), true);
      button.disabled = false;
    }
  };
  return button;
}

function ref(recorder, camera) {
  return { recorder, camera };
}

async function proposals(a, b) {
  const query = new URLSearchParams({ a, b });
  const found = await api(`/api/v1/pairs/proposals?${query}`);
  const rows = found.proposals.map((proposal) => {
    const row = document.createElement("tr");
    row.dataset.proposal = `${proposal.a}=${proposal.b}`;
    cell(row, `${a}:${proposal.a}`);
    cell(row, `${b}:${proposal.b}`);
    cell(row, proposal.kind, proposal.auto_acceptable ? "state-ok" : "");
    cell(row, `${Math.round(proposal.confidence * 100)} %`);
    cell(row, [...proposal.reasons, ...proposal.conflicts.map((c) => `conflict: ${c}`)].join("; "));
    const pair = { a: ref(a, proposal.a), b: ref(b, proposal.b), kind: proposal.kind, reasons: proposal.reasons };
    row.insertCell().append(
      configureButton("Accept", async () => {
        const answer = await api("/api/v1/pairs", { json: pair });
        return `pair ${a}:${proposal.a} = ${b}:${proposal.b} accepted (configuration version ${answer.version})`;
      }),
      configureButton("Reject", async () => {
        const answer = await api("/api/v1/pairs/reject", { json: { a: pair.a, b: pair.b } });
        return `proposal rejected (configuration version ${answer.version})`;
      }),
    );
    return row;
  });
  $("#proposals tbody").replaceChildren(...rows);
  $("#mapping-warnings").replaceChildren(...found.warnings.map((w) => element("div", { className: "alert", textContent: w })));
  const exact = found.proposals.filter((p) => p.auto_acceptable).length;
  $("#accept-exact").replaceChildren(
    configureButton(`Accept exact matches (${exact})`, async () => {
      const answer = await api(`/api/v1/pairs/accept-exact?${query}`, { method: "POST" });
      return `${answer.accepted.length} pairs accepted (configuration version ${answer.version})`;
    }),
  );
}

export async function mapping(entered) {
  if (!me.management) {
    $("#mapping-note").textContent = "camera mapping is done on the management server's console";
    return;
  }
  if (!me.may_configure) {
    $("#mapping-note").textContent = "camera mapping changes the configuration: sign in as an admin";
    return;
  }
  const recorders = (await api("/api/v1/recorders")).recorders.filter((r) => r.cluster === null);
  if (recorders.length < 2) {
    $("#mapping-note").textContent = "camera mapping pairs cameras of two independent recorders; there are fewer here";
    return;
  }
  if (entered || !sides) {
    const choose = (id, chosen) => {
      const select = $(id);
      select.replaceChildren(...recorders.map((r) => element("option", { value: r.id, textContent: r.id, selected: r.id === chosen })));
      select.onchange = () => {
        sides = [$("#map-a").value, $("#map-b").value];
        mapping(false);
      };
    };
    sides = sides || [recorders[0].id, recorders[1].id];
    choose("#map-a", sides[0]);
    choose("#map-b", sides[1]);
  }
  if (sides[0] !== sides[1]) await proposals(sides[0], sides[1]);
  const listing = await api("/api/v1/pairs");
  $("#pairs tbody").replaceChildren(
    ...listing.pairs.map((pair) => {
      const row = document.createElement("tr");
      row.dataset.pair = `${pair.a.recorder}:${pair.a.camera}`;
      cell(row, `${pair.a.recorder}:${pair.a.camera}`);
      cell(row, `${pair.b.recorder}:${pair.b.camera}`);
      cell(row, pair.kind);
      cell(row, pair.failback);
      cell(row, pair.standby);
      row.insertCell().append(
        configureButton("Dissolve", async () => {
          await api("/api/v1/pairs/reject", { json: { a: pair.a, b: pair.b } });
          return `pair ${pair.a.recorder}:${pair.a.camera} dissolved`;
        }),
      );
      return row;
    }),
  );
}
