"""The bus API: per service, its endpoints with their request and reply models.

Services serve these tables and the client calls them; neither imports the
other.  Field names follow libvirt's API where it has one.
"""
