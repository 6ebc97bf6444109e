"""The storage service: pools and volumes of one host, libvirt's storage driver on the bus."""
