"""The secret service: libvirt's secret driver on the bus."""
