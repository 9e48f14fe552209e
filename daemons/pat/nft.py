"""The PAT gateway's one nftables table, built as nf_tables netlink messages and sent with pyroute2.

No `nft` binary and no iptables: every object is an nfnetlink message (pyroute2's nft_table_msg,
nft_chain_msg, nft_rule_msg) and a rule is a list of expressions, exactly what `nft --debug=netlink`
prints. The table this module makes (family ip), for inside 10.10.10.0/24, outside "outside":

    table ip natt_pat {                                   comment "natt-pat pid=<the daemon's pid>"
        chain postrouting { type nat hook postrouting priority 100; policy accept;
            oifname "outside" ip saddr 10.10.10.0/24 counter masquerade to :1025-65535   comment "masquerade"
        }
        chain forward { type filter hook forward priority 0; policy accept;
            ip saddr 10.10.10.0/24 ip protocol esp counter drop                          comment "esp-drop"
        }
    }

With esp_passthrough the ESP rule keeps its counter but has no verdict (comment "esp-pass"), so ESP
is counted and forwarded. Without a port range the masquerade has no registers and no flags.

Installing is one nfnetlink batch (BATCH_BEGIN … BATCH_END), which the kernel applies as one
transaction: "add table; delete table; add table, chains, rules" creates or atomically replaces the
table, and a failure anywhere leaves the ruleset as it was. The table's comment marks it as ours.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES, nfgen_msg
from pyroute2.netlink.nfnetlink.nftsocket import (
    NFPROTO_IPV4,
    NFT_MSG_DELTABLE,
    NFT_MSG_GETRULE,
    NFT_MSG_GETTABLE,
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWTABLE,
    NFTSocket,
    nft_chain_msg,
    nft_rule_msg,
    nft_table_msg,
)

OWNER_MARK = "natt-pat"  # the table's comment (NFTA_TABLE_USERDATA): this table was made by natt-pat
NAT_CHAIN = "postrouting"
FILTER_CHAIN = "forward"
RULE_MASQ = "masquerade"
RULE_ESP_DROP = "esp-drop"
RULE_ESP_PASS = "esp-pass"

# include/uapi/linux/netfilter/nfnetlink.h and nf_tables.h
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NF_INET_FORWARD = 2
NF_INET_POST_ROUTING = 4
NF_DROP = 0
NF_ACCEPT = 1
NFT_REG_VERDICT = 0
NFT_REG_1 = 1
NFT_REG_2 = 2
NFT_META_OIFNAME = 7
NFT_PAYLOAD_NETWORK_HEADER = 1
NFT_CMP_EQ = 0
IFNAMSIZ = 16
IPPROTO_ESP = 50


NETLINK_ERRORS = (NetlinkError, OSError)  # what the kernel's refusal looks like through pyroute2


class NftError(Exception):
    """The kernel refused a change to our table; the message says which one and why."""


@dataclass(frozen=True)
class TableSpec:
    """Everything the table depends on (a part of PatSettings, so that others can reuse this module)."""

    name: str
    inside_network: str
    outside_interface: str
    port_range: tuple[int, int] | None = None
    esp_passthrough: bool = False
    comment: str = OWNER_MARK  # the table's comment; natt-pat writes "natt-pat pid=N"


# -- expressions ------------------------------------------------------------------------------
# Each returns one NFTA_RULE_EXPRESSIONS element: {'attrs': [NFTA_EXPR_NAME, NFTA_EXPR_DATA]}.


def expr(name: str, *data: tuple[str, Any]) -> dict[str, Any]:
    return {"attrs": [("NFTA_EXPR_NAME", name), ("NFTA_EXPR_DATA", {"attrs": list(data)})]}


def _value(data: bytes) -> dict[str, Any]:
    return {"attrs": [("NFTA_DATA_VALUE", data)]}


def meta_load(key: int, dreg: int = NFT_REG_1) -> dict[str, Any]:
    return expr("meta", ("NFTA_META_DREG", dreg), ("NFTA_META_KEY", key))


def payload_load(offset: int, length: int, base: int = NFT_PAYLOAD_NETWORK_HEADER,
                 dreg: int = NFT_REG_1) -> dict[str, Any]:
    return expr("payload", ("NFTA_PAYLOAD_DREG", dreg), ("NFTA_PAYLOAD_BASE", base),
                ("NFTA_PAYLOAD_OFFSET", offset), ("NFTA_PAYLOAD_LEN", length))


def cmp_eq(data: bytes, sreg: int = NFT_REG_1) -> dict[str, Any]:
    return expr("cmp", ("NFTA_CMP_SREG", sreg), ("NFTA_CMP_OP", NFT_CMP_EQ), ("NFTA_CMP_DATA", _value(data)))


def bitwise_and(mask: bytes, reg: int = NFT_REG_1) -> dict[str, Any]:
    return expr("bitwise", ("NFTA_BITWISE_SREG", reg), ("NFTA_BITWISE_DREG", reg), ("NFTA_BITWISE_LEN", len(mask)),
                ("NFTA_BITWISE_MASK", _value(mask)), ("NFTA_BITWISE_XOR", _value(bytes(len(mask)))))


def counter() -> dict[str, Any]:
    return expr("counter", ("NFTA_COUNTER_BYTES", 0), ("NFTA_COUNTER_PACKETS", 0))


def immediate_data(data: bytes, dreg: int) -> dict[str, Any]:
    return expr("immediate", ("NFTA_IMMEDIATE_DREG", dreg), ("NFTA_IMMEDIATE_DATA", _value(data)))


def verdict(code: int) -> dict[str, Any]:
    data = {"attrs": [("NFTA_DATA_VERDICT", {"attrs": [("NFTA_VERDICT_CODE", code)]})]}
    return expr("immediate", ("NFTA_IMMEDIATE_DREG", NFT_REG_VERDICT), ("NFTA_IMMEDIATE_DATA", data))


def masquerade(port_range: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """`masquerade` or `masquerade to :lo-hi` (ports in registers 1 and 2, 16 bits, network order)."""
    if port_range is None:
        return [expr("masq")]
    lo, hi = port_range
    return [
        immediate_data(struct.pack(">H", lo), NFT_REG_1),
        immediate_data(struct.pack(">H", hi), NFT_REG_2),
        expr("masq", ("NFTA_MASQ_REG_PROTO_MIN", NFT_REG_1), ("NFTA_MASQ_REG_PROTO_MAX", NFT_REG_2),
             ("NFTA_MASQ_FLAGS", {"NF_NAT_RANGE_PROTO_SPECIFIED"})),
    ]


def match_oifname(ifname: str) -> list[dict[str, Any]]:
    return [meta_load(NFT_META_OIFNAME), cmp_eq(ifname.encode().ljust(IFNAMSIZ, b"\0"))]


def match_ip_saddr(network: str) -> list[dict[str, Any]]:
    """`ip saddr NET`: load the 4 bytes at offset 12 of the IPv4 header, mask, compare."""
    net = ipaddress.IPv4Network(network, strict=False)
    out = [payload_load(12, 4)]
    if net.prefixlen < 32:
        out.append(bitwise_and(net.netmask.packed))
    out.append(cmp_eq(net.network_address.packed))
    return out


def match_ip_protocol(proto: int) -> list[dict[str, Any]]:
    return [payload_load(9, 1), cmp_eq(bytes([proto]))]


def masquerade_rule(spec: TableSpec) -> list[dict[str, Any]]:
    return [*match_oifname(spec.outside_interface), *match_ip_saddr(spec.inside_network), counter(),
            *masquerade(spec.port_range)]


def esp_rule(spec: TableSpec) -> list[dict[str, Any]]:
    out = [*match_ip_saddr(spec.inside_network), *match_ip_protocol(IPPROTO_ESP), counter()]
    if not spec.esp_passthrough:
        out.append(verdict(NF_DROP))
    return out


# -- messages ---------------------------------------------------------------------------------


def _batch_marker(kind: int) -> nfgen_msg:
    m = nfgen_msg()
    m["res_id"] = NFNL_SUBSYS_NFTABLES
    m["header"]["type"] = kind
    m["header"]["flags"] = NLM_F_REQUEST
    return m


def _msg(cls: type, kind: int, attrs: list[tuple[str, Any]], flags: int = 0) -> Any:
    m = cls()
    m["attrs"] = attrs
    m["header"]["type"] = (NFNL_SUBSYS_NFTABLES << 8) | kind
    m["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
    m["nfgen_family"] = NFPROTO_IPV4
    return m


def new_table(name: str, comment: str | None = OWNER_MARK) -> Any:
    attrs: list[tuple[str, Any]] = [("NFTA_TABLE_NAME", name)]
    if comment:
        attrs += [("NFTA_TABLE_FLAGS", 0), ("NFTA_TABLE_USERDATA", comment)]
    return _msg(nft_table_msg, NFT_MSG_NEWTABLE, attrs, NLM_F_CREATE)


def ensure_table(name: str) -> Any:
    """"add table NAME" that changes nothing when it exists (no flags, no comment): makes a delete safe."""
    return new_table(name, comment=None)


def del_table(name: str) -> Any:
    return _msg(nft_table_msg, NFT_MSG_DELTABLE, [("NFTA_TABLE_NAME", name)])


def new_base_chain(table: str, name: str, kind: str, hook: int, priority: int, policy: int = NF_ACCEPT) -> Any:
    return _msg(nft_chain_msg, NFT_MSG_NEWCHAIN, [
        ("NFTA_CHAIN_TABLE", table),
        ("NFTA_CHAIN_NAME", name),
        ("NFTA_CHAIN_HOOK", {"attrs": [("NFTA_HOOK_HOOKNUM", hook), ("NFTA_HOOK_PRIORITY", priority)]}),
        ("NFTA_CHAIN_POLICY", policy),
        ("NFTA_CHAIN_TYPE", kind),
    ], NLM_F_CREATE)


def new_rule(table: str, chain: str, expressions: list[dict[str, Any]], comment: str) -> Any:
    return _msg(nft_rule_msg, NFT_MSG_NEWRULE, [
        ("NFTA_RULE_TABLE", table),
        ("NFTA_RULE_CHAIN", chain),
        ("NFTA_RULE_EXPRESSIONS", expressions),
        ("NFTA_RULE_USERDATA", comment),
    ], NLM_F_CREATE | NLM_F_APPEND)


def table_messages(spec: TableSpec) -> list[Any]:
    """The objects of our table, in the order the kernel needs them."""
    t = spec.name
    return [
        new_table(t, spec.comment),
        new_base_chain(t, NAT_CHAIN, "nat", NF_INET_POST_ROUTING, 100),
        new_base_chain(t, FILTER_CHAIN, "filter", NF_INET_FORWARD, 0),
        new_rule(t, NAT_CHAIN, masquerade_rule(spec), RULE_MASQ),
        new_rule(t, FILTER_CHAIN, esp_rule(spec), RULE_ESP_PASS if spec.esp_passthrough else RULE_ESP_DROP),
    ]


def install_batch(spec: TableSpec, also_remove: Iterable[str] = ()) -> list[Any]:
    """One transaction that creates spec's table or replaces it whole, and removes the tables named in
    also_remove (a previous name after a reload). The leading "add table" makes "delete table" safe when
    the table does not exist yet, as `nft -f` does."""
    msgs = [_batch_marker(NFNL_MSG_BATCH_BEGIN)]
    for name in dict.fromkeys([*also_remove, spec.name]):
        msgs += [ensure_table(name), del_table(name)]
    msgs += table_messages(spec)
    msgs.append(_batch_marker(NFNL_MSG_BATCH_END))
    return msgs


# -- I/O (blocking: call from a worker thread, e.g. asyncio.to_thread) ------------------------


def _run_batch(msgs: list[Any], what: str) -> None:
    try:
        with NFTSocket(nfgen_family=NFPROTO_IPV4) as nft:
            nft.nlm_request_batch(msgs)
    except NETLINK_ERRORS as e:
        raise NftError(f"{what}: {e}") from e


def install(spec: TableSpec, also_remove: Iterable[str] = ()) -> None:
    _run_batch(install_batch(spec, also_remove), f"installing nftables table ip {spec.name}")


def remove(name: str) -> bool:
    """Delete table ip NAME (and everything in it). False when it was not there."""
    existed = name in {t["name"] for t in list_tables()}
    # "add; delete" in one transaction: no error if someone else deleted it since we looked
    msgs = [_batch_marker(NFNL_MSG_BATCH_BEGIN), ensure_table(name), del_table(name),
            _batch_marker(NFNL_MSG_BATCH_END)]
    _run_batch(msgs, f"deleting nftables table ip {name}")
    return existed


def _comment(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        # raw NFTNL_UDATA TLVs (type 0 = comment): type, length, text, NUL
        if len(value) >= 2 and value[0] == 0:
            return value[2 : 2 + value[1]].rstrip(b"\0").decode(errors="replace")
        return value.decode(errors="replace")
    return str(value)


def list_tables() -> list[dict[str, Any]]:
    """Every table of family ip in this network namespace: name and comment."""
    with NFTSocket(nfgen_family=NFPROTO_IPV4) as nft:
        msgs = nft.request_get(nfgen_msg(), NFT_MSG_GETTABLE)
    return [{"name": m.get_attr("NFTA_TABLE_NAME"), "comment": _comment(m.get_attr("NFTA_TABLE_USERDATA"))}
            for m in msgs]


def owner(name: str) -> str | None:
    """None when table ip NAME does not exist; else its comment ("" when it has none)."""
    for t in list_tables():
        if t["name"] == name:
            return t["comment"] or ""
    return None


def rules(name: str) -> list[dict[str, Any]]:
    """The rules of table ip NAME: chain, comment, expression names and counter values."""
    q = nft_rule_msg()
    q["attrs"] = [("NFTA_RULE_TABLE", name)]
    with NFTSocket(nfgen_family=NFPROTO_IPV4) as nft:
        msgs = nft.request_get(q, NFT_MSG_GETRULE)
    out = []
    for m in msgs:
        if m.get_attr("NFTA_RULE_TABLE") != name:
            continue
        exprs = m.get_attr("NFTA_RULE_EXPRESSIONS") or []
        rule: dict[str, Any] = {
            "chain": m.get_attr("NFTA_RULE_CHAIN"),
            "comment": _comment(m.get_attr("NFTA_RULE_USERDATA")),
            "expressions": [e.get_attr("NFTA_EXPR_NAME") for e in exprs],
            "packets": 0,
            "bytes": 0,
        }
        for e in exprs:
            if e.get_attr("NFTA_EXPR_NAME") == "counter":
                data = e.get_attr("NFTA_EXPR_DATA")
                rule["packets"] = data.get_attr("NFTA_COUNTER_PACKETS") or 0
                rule["bytes"] = data.get_attr("NFTA_COUNTER_BYTES") or 0
        out.append(rule)
    return out


def counters(name: str) -> dict[str, tuple[int, int]]:
    """Rule comment → (packets, bytes) for the counters in table ip NAME."""
    return {r["comment"]: (r["packets"], r["bytes"]) for r in rules(name) if r["comment"]}


def describe(spec: TableSpec) -> str:
    """The table in nft's own syntax, for logs and `status` (what was installed, not read back)."""
    ports = f" to :{spec.port_range[0]}-{spec.port_range[1]}" if spec.port_range else ""
    esp = "counter" if spec.esp_passthrough else "counter drop"
    return (f'table ip {spec.name} {{ chain {NAT_CHAIN} {{ type nat hook postrouting priority 100; '
            f'oifname "{spec.outside_interface}" ip saddr {spec.inside_network} counter masquerade{ports} }} '
            f'chain {FILTER_CHAIN} {{ type filter hook forward priority 0; '
            f'ip saddr {spec.inside_network} ip protocol esp {esp} }} }}')

