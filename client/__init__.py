"""The virtbus client: a typed async Python API over the bus, and the ``virtbus`` CLI.

``Client`` connects to NATS and exposes one sub-client per service
(``client.secret``...).  It imports only ``shared``; it never imports a service.
"""
