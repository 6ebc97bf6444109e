"""Pools and volumes: libvirt's storage driver (storage_driver.c, virstorageobj.c)
and its backends, one per pool type."""
