"""The cluster's virtual IP: added by the token holder on a named interface, removed when it lets go.

Two safety nets make "never two holders of the address" hold even for a holder that is frozen
(SIGSTOP, a hung VM) and cannot remove anything:
1. The address is added with a kernel lifetime (valid_lft) that runs out when the holder's right
   to present does; the holder refreshes it while it renews. Linux removes an expired address by
   itself, within about half a second of the lifetime (measured; the lifetime is whole seconds).
2. A member that takes the token from a holder that did *not* hand it over waits out that lifetime
   (`takeover_delay`) before adding the address. After a clean handover it adds it at once.
On adding, gratuitous ARP tells the segment's neighbours the address moved.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import struct
from collections.abc import Callable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger("gapless.vip")

#: How much longer than its lifetime an address may stay: Linux's lifetime check runs on whole
#: seconds (measured here: gone 0.1 to 0.5 s after a 1 or 2 s lifetime).
KERNEL_SLACK_S = 1.0
GARP_COUNT = 3


def gratuitous_arp(interface: str, address: str, mac: str) -> None:
    """Broadcast an ARP request for our own address (sender = target = the VIP)."""
    hw = bytes.fromhex(mac.replace(":", ""))
    ip = socket.inet_aton(address)
    frame = b"\xff" * 6 + hw + b"\x08\x06"
    frame += struct.pack(">HHBBH", 1, 0x0800, 6, 4, 1) + hw + ip + b"\x00" * 6 + ip
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((interface, 0))
        for _ in range(GARP_COUNT):
            raw.send(frame)


class VirtualIP:
    def __init__(self, address: str, interface: str) -> None:
        iface = ipaddress.ip_interface(address)
        self.address, self.prefixlen = str(iface.ip), iface.network.prefixlen
        self.interface = interface
        self._warned = False

    def takeover_delay(self) -> float:
        """How long a new holder waits after an unclean takeover. The old holder's last refresh at R
        set a lifetime of max(1, floor(V - R)) s, V being when its right to present ended (before its
        lease expired, which is before we could take the token): the address is gone by
        max(R + 1, V) + slack ≤ V + 1 + slack."""
        return 1.0 + KERNEL_SLACK_S

    def reconcile(self, remaining: Callable[[], float]) -> None:
        """Present the address for `remaining()` more seconds, or not at all (≤ 0). `remaining` is
        asked right before acting, and again after an add: a process frozen (SIGSTOP, a paused VM)
        in the middle resumes with a decision from before the freeze, by when another member may
        hold the address (seen: 0.12 s on both members when it was asked once, before reading the
        interface)."""
        with IPRoute() as ipr:
            links = ipr.link_lookup(ifname=self.interface)
            if not links:
                if not self._warned:
                    log.error("virtual IP: no interface %r; not presenting %s", self.interface, self.address)
                    self._warned = True
                return
            index = links[0]
            here = any(a.get("IFA_ADDRESS") == self.address for a in ipr.get_addr(index=index))
            remaining_s = remaining()
            if remaining_s > 0:
                lifetime = max(1, math.floor(remaining_s))
                info = {"ifa_preferred": lifetime, "ifa_valid": lifetime, "cstamp": 0, "tstamp": 0}
                ipr.addr("replace", index=index, address=self.address, prefixlen=self.prefixlen, IFA_CACHEINFO=info)
                if remaining() > 0:
                    if not here:
                        log.warning("virtual IP %s added on %s", self.address, self.interface)
                        self._announce(ipr, index)
                    return
                here = True  # frozen between the decision and the add: take it back at once
            if here:
                try:
                    ipr.addr("del", index=index, address=self.address, prefixlen=self.prefixlen)
                except NetlinkError as exc:
                    if exc.code != 99:  # EADDRNOTAVAIL: the kernel's lifetime got there first
                        raise
                log.warning("virtual IP %s removed from %s", self.address, self.interface)

    def _announce(self, ipr: IPRoute, index: int) -> None:
        mac = ipr.get_links(index)[0].get("IFLA_ADDRESS")
        try:
            gratuitous_arp(self.interface, self.address, mac)
        except OSError as exc:
            log.error("virtual IP: gratuitous ARP failed: %s", exc)
