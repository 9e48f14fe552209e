"""natt-manager: the VPN 3000 Concentrator Manager's pages for the natt concentrator, over its control socket."""
