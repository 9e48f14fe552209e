"""The PAT gateway: many inside hosts behind one outside address, programmed over netlink.

nft.py builds and installs one nftables table (masquerade + an ESP drop rule) with pyroute2;
conntrack.py reads the translations back from the kernel's connection tracking table;
daemon.py ties them to the control socket; cli.py is `natt-pat`.
"""
