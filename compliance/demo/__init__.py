"""The demo plant (GF1 with a prismatic and a cylindrical line) and its line simulator.

``plant`` holds the master data and seeds it (``manage.py seed_demo``); ``line`` produces
units, links, station visits and measurements through the same services the plant's
systems use (``manage.py simulate``).
"""
