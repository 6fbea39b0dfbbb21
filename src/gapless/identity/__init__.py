"""Camera identity: what a camera says it is over ONVIF, and (later) matching cameras across recorders."""
