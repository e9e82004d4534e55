"""The Epoch Compare tab: layout, the host-neutral render loop and the compare API."""
