"""The lab: network namespaces, links and processes for `make lab` and the lab tests.

Everything lives in namespaces named <prefix><role>, so several labs can coexist (the default
prefix is `natt-`; tests use a random one). See topology.Lab for the network and procs for the
processes started in it.
"""

from natt_daemons.lab.topology import ADDR, IFACE, ROLES, Lab, LabError

__all__ = ["ADDR", "IFACE", "ROLES", "Lab", "LabError"]
