"""The nwfilter service: network filters and their bindings, compiled to firewall rules."""
