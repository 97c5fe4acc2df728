"""The ruleset as the trace events need it: which rule a (family, table,
handle) is, its chain's hook and priority, its position N in the chain, and
its text: as `iptables -S` prints it where iptables made it, and as `nft`
prints it always.

Identity and order come from libnftables' JSON (`list ruleset`): a rule's
handle, its chain, its place among the chain's rules. The iptables form
comes from `iptables-save` (nf_tables backend), whose `-A CHAIN` lines are in
chain order: line N of chain C is rule N of C when the chain holds as many
rules in both views (a chain someone also edited with `nft`, so the counts
differ, gets the nft form only). The nft form is libnftables' own listing
with handles, the line whose `# handle H` names the rule.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

from tracer.errors import MissingCapability

# nfgen families (NFPROTO_*) as nft names them
FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
IPTABLES_TABLES = ("raw", "mangle", "nat", "filter", "security")
_HANDLE_RE = re.compile(r"^(?P<body>.*?)\s*# handle (?P<handle>\d+)\s*$")


@dataclass(frozen=True, slots=True)
class Chain:
    family: str
    table: str
    name: str
    hook: str | None  # prerouting, input, forward, output, postrouting (base chains)
    priority: int | None
    policy: str | None


@dataclass(frozen=True, slots=True)
class Rule:
    family: str
    table: str
    chain: str
    handle: int
    position: int  # 1-based, as `iptables -L --line-numbers` counts
    iptables: str | None  # `-A CHAIN ...` where iptables made it
    nft: str | None  # the rule as `nft list` prints it


@dataclass
class Ruleset:
    chains: dict[tuple[str, str, str], Chain] = field(default_factory=dict)
    rules: dict[tuple[str, str, int], Rule] = field(default_factory=dict)

    def rule(self, family: str, table: str, handle: int) -> Rule | None:
        return self.rules.get((family, table, handle))

    def chain(self, family: str, table: str, name: str) -> Chain | None:
        return self.chains.get((family, table, name))


def build(nft_json: list[dict], nft_text: str = "", iptables_save: str = "") -> Ruleset:
    """A Ruleset from libnftables' JSON objects, its text listing with
    handles, and `iptables-save`'s output (each may be empty)."""
    rs = Ruleset()
    per_chain: dict[tuple[str, str, str], list[int]] = {}
    for obj in nft_json:
        if "chain" in obj:
            c = obj["chain"]
            key = (c["family"], c["table"], c["name"])
            rs.chains[key] = Chain(c["family"], c["table"], c["name"], c.get("hook"), c.get("prio"), c.get("policy"))
            per_chain.setdefault(key, [])
        elif "rule" in obj:
            r = obj["rule"]
            per_chain.setdefault((r["family"], r["table"], r["chain"]), []).append(int(r["handle"]))
    nft_lines = nft_rule_texts(nft_text)
    ipt_lines = iptables_chain_lines(iptables_save)
    for (family, table, chain), handles in per_chain.items():
        ipt = ipt_lines.get((table, chain)) if family == "ip" and table in IPTABLES_TABLES else None
        if ipt is not None and len(ipt) != len(handles):
            ipt = None  # not iptables' view of this chain (edited with nft too)
        for i, handle in enumerate(handles):
            rs.rules[(family, table, handle)] = Rule(
                family, table, chain, handle, i + 1, ipt[i] if ipt is not None else None,
                nft_lines.get((family, table, handle)))
    return rs


def nft_rule_texts(text: str) -> dict[tuple[str, str, int], str]:
    """(family, table, handle) -> rule text, from `nft -a list ruleset`."""
    out: dict[tuple[str, str, int], str] = {}
    family = table = None
    in_chain = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("table "):
            parts = line.split()
            family, table, in_chain = parts[1], parts[2], False
        elif line.startswith("chain "):
            in_chain = True
        elif line.startswith(("set ", "map ", "flowtable ", "counter ", "quota ", "ct ", "limit ")) and line.endswith("{"):
            in_chain = False
        elif line == "}":
            in_chain = False if in_chain else in_chain
        elif in_chain and family and (m := _HANDLE_RE.match(line)):
            body = m.group("body")
            if not body.startswith(("type ", "policy ")):
                out[(family, table, int(m.group("handle")))] = body
    return out


def iptables_chain_lines(save: str) -> dict[tuple[str, str], list[str]]:
    """(table, chain) -> its `-A` lines in order, from `iptables-save`."""
    out: dict[tuple[str, str], list[str]] = {}
    table = None
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":") and table:
            out.setdefault((table, line[1:].split()[0]), [])
        elif line.startswith("-A ") and table:
            out.setdefault((table, line.split()[1]), []).append(line.strip())
    return out


# --- the iptables backend --------------------------------------------------------

def iptables_backend(version_text: str) -> str | None:
    """'nf_tables' or 'legacy' from `iptables -V` ("iptables v1.8.9
    (nf_tables)"); None when it says neither."""
    m = re.search(r"\((nf_tables|legacy)\)", version_text or "")
    if m:
        return m.group(1)
    if re.search(r"iptables v1\.[0-7]\.", version_text or ""):
        return "legacy"  # before 1.8 there was only the legacy backend
    return None


def legacy_rules_present(names_text: str) -> bool:
    """Whether the legacy x_tables are in use (/proc/net/ip_tables_names lists
    a table): then Docker's rules may live there, out of nf_tables' sight."""
    return bool(names_text.strip())


def iptables_state() -> tuple[str | None, str]:
    """(backend, detail) of this host's iptables."""
    exe = shutil.which("iptables")
    if exe is None:
        return None, "no iptables command"
    try:
        text = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"iptables -V failed: {exc}"
    return iptables_backend(text), text


def check_rule_attribution() -> str:
    """Raise MissingCapability (one line) unless Docker's iptables rules are
    nf_tables rules that nf_tables tracing can name; returns iptables -V."""
    backend, detail = iptables_state()
    if backend == "legacy":
        raise MissingCapability(f"--rules needs the nf_tables backend of iptables; this host uses iptables-legacy ({detail}), "
                                "whose rules nf_tables tracing cannot see")
    try:
        with open("/proc/net/ip_tables_names") as f:
            if legacy_rules_present(f.read()):
                raise MissingCapability("--rules: legacy iptables tables are loaded (/proc/net/ip_tables_names); "
                                        "rules there are invisible to nf_tables tracing")
    except FileNotFoundError:
        pass
    return detail


def iptables_save_text() -> str:
    """`iptables-save` of the nf_tables backend ('' where there is none)."""
    exe = shutil.which("iptables-nft-save") or shutil.which("iptables-save")
    if exe is None:
        return ""
    try:
        done = subprocess.run([exe], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def read_ruleset(nft) -> Ruleset:
    """The live ruleset through libnftables (`nft`: an nftables.Nftables)."""
    from tracer.kernel.nft_table import list_ruleset_json, run

    objects = list_ruleset_json(nft)
    nft.set_handle_output(True)
    nft.set_stateless_output(True)  # no counter values in the rule text
    try:
        text = run(nft, "list ruleset")
    finally:
        nft.set_handle_output(False)
        nft.set_stateless_output(False)
    return build(objects, text, iptables_save_text())
