"""tracer/kernel is the bottom layer: it loads programs, attaches links and
reads maps, and imports nothing from the layers above it (what to filter
arrives as plain values and C text); tracer/sensors sits on it alone.
Imports only under TYPE_CHECKING (annotations) do not count."""

from __future__ import annotations

import ast
from pathlib import Path

KERNEL = Path(__file__).resolve().parents[2] / "tracer" / "kernel"
# Below tracer/kernel or beside it: shared definitions only (own_env: which
# environment variables are tracer's own, so its children do not inherit
# BCC_KERNEL_SOURCE; it imports nothing of tracer).
ALLOWED = {"tracer.kernel", "tracer.events", "tracer.errors", "tracer.own_env"}
# Known exceptions: none (nothing joins this list).
KNOWN: set[tuple[str, str]] = set()


def runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "tracer":  # `from tracer import session`
            found |= {f"tracer.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tracer"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tracer")}
    return found


def test_kernel_imports_nothing_above_itself():
    bad = []
    for path in sorted(KERNEL.glob("*.py")):
        for module in runtime_imports(path):
            top = module if module in ALLOWED else ".".join(module.split(".")[:2])
            if top not in ALLOWED and (path.name, module) not in KNOWN:
                bad.append(f"{path.name} imports {module}")
    assert not bad, bad


SENSORS = KERNEL.parent / "sensors"
# Sensors sit on tracer/kernel: they attach what it loads, nothing above.
SENSOR_ALLOWED = ALLOWED | {"tracer.sensors", "tracer.text"}


def test_sensors_import_only_the_kernel_layer_and_shared_definitions():
    bad = []
    for path in sorted(SENSORS.glob("*.py")):
        for module in runtime_imports(path):
            top = module if module in SENSOR_ALLOWED else ".".join(module.split(".")[:2])
            if top not in SENSOR_ALLOWED:
                bad.append(f"sensors/{path.name} imports {module}")
    assert not bad, bad


def test_from_tracer_import_counts_the_module_it_names(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("from tracer import session, events\nfrom tracer.kernel import links\n")
    assert runtime_imports(source) == {"tracer.session", "tracer.events", "tracer.kernel"}


CLI = KERNEL.parent / "cli"
# Commands share only their options (cli/options.py); the run loop, feeds and
# everything else they use sit below the CLI. cli/__init__.py registers the
# commands, so it alone imports the command modules.
CLI_SHARED = {"tracer.cli.options"}


def test_cli_commands_import_no_other_command():
    bad = []
    modules = sorted(CLI.glob("*.py"))
    assert {"trace.py", "record.py", "options.py", "__init__.py"} <= {p.name for p in modules}
    for path in modules:
        if path.name == "__init__.py":
            continue
        for module in runtime_imports(path):
            if (module == "tracer.cli" or module.startswith("tracer.cli.")) and module not in CLI_SHARED:
                bad.append(f"cli/{path.name} imports {module}")
    assert not bad, bad


def test_cli_init_imports_only_command_modules_of_its_own():
    for module in runtime_imports(CLI / "__init__.py"):
        if module.startswith("tracer.cli."):
            assert (CLI / (module.split(".")[2] + ".py")).exists(), module


TRACER = KERNEL.parent
# The outputs of a run (tracer/sinks.py) get what they may know of it in
# RunInfo, Batch and RunEnd: none of them reaches into the session.
SINKS = ("sinks.py", "live_output.py", "feeds.py", "capture/recorder.py")


def test_sinks_and_feeds_never_import_the_session():
    bad = [f"{name} imports {module}" for name in SINKS for module in runtime_imports(TRACER / name)
           if module in ("tracer.session", "tracer.live")]
    assert not bad, bad


def test_the_session_imports_no_output():
    """The session wires the kernel side; it formats and writes nothing."""
    outputs = {"tracer.render", "tracer.render_rows", "tracer.live_output", "tracer.journey_json", "tracer.output",
               "tracer.capture", "tracer.capture.recorder", "tracer.capture.writer", "tracer.cli"}
    found = runtime_imports(TRACER / "session.py") & outputs
    assert not found, found
