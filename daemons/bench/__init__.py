"""Benchmarks (`natt-bench`): throughput through the VPN configurations, in fresh lab namespaces.

cli holds the click group, throughput the measurement, report the table and JSON, forwarder a
crypto-free TUN↔UDP forwarder that shows what plain Python costs without ESP.
"""
