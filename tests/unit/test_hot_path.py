"""The warm start path stays lean: stage1 never imports click, jsonschema or HTTP
code, imports exactly the standard modules listed here, and runs without site-packages
(python -I -S, as stage0 execs it).  podrun.lean says why; a module added to these lists is a
start-up cost every pod pays, so it is a decision, not a side effect."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ("click", "jsonschema", "urllib3", "http.client", "podrun.image", "podrun.cli", "podrun.stage0")

# Every module (other than podrun's) that importing stage1's run path loads, beyond what the
# interpreter itself loaded: ctypes (the kernel layer) and small C or os-level modules.  Not
# signal (it loads enum, functools, collections: ~8 ms): stage1 takes its signals through a
# signalfd of the kernel layer (podrun.isolation.signals).
STAGE1_IMPORTS = frozenset({
    "__future__", "_collections_abc", "_ctypes", "_stat", "_struct", "ctypes", "ctypes._endian", "errno", "fcntl",
    "genericpath", "os", "os.path", "posixpath", "resource", "select", "stat", "struct", "types",
})
# ... and what reading the pod manifest adds at run time: the json package, and re, which it
# uses (re loads enum, functools and collections).
MANIFEST_IMPORTS = frozenset({
    "_collections", "_functools", "_json", "_operator", "_sre", "collections", "copyreg", "enum", "functools",
    "itertools", "json", "json.decoder", "json.encoder", "json.scanner", "keyword", "operator", "re", "re._casefix",
    "re._compiler", "re._constants", "re._parser", "reprlib",
})

# ... and what ``podrun enter``'s stage1 entrypoint adds: termios, for the pty it may allocate
# (podrun.stage2.tty).  Not re, typing or pathlib: enter is a stage1 module like the others.
ENTER_IMPORTS = frozenset({"termios"})


def _stage1_modules(then: str = "") -> tuple[set[str], set[str]]:
    code = (
        f"import sys; base = set(sys.modules); sys.path.insert(0, {str(ROOT)!r}); "
        "import podrun.stage1.default.run, podrun.stage1.fly, podrun.stage2.confine; "
        f"loaded = set(sys.modules); {then or 'pass'}; "
        "print(' '.join(sorted(loaded - base))); print(' '.join(sorted(set(sys.modules) - loaded)))"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    first, second = out.stdout.split("\n")[:2]
    return set(first.split()), set(second.split())


def test_stage1_imports_exactly_the_listed_modules() -> None:
    loaded, _ = _stage1_modules()
    assert not [m for m in HEAVY if m in loaded]
    other = {m for m in loaded if m != "podrun" and not m.startswith("podrun.")}
    assert other == STAGE1_IMPORTS, f"added: {sorted(other - STAGE1_IMPORTS)}, gone: {sorted(STAGE1_IMPORTS - other)}"


def test_reading_the_manifest_adds_only_json() -> None:
    _, added = _stage1_modules(
        "from podrun.model.manifest import PodManifest; "
        "PodManifest.from_json(PodManifest('u', ()).to_json())"
    )
    assert added == MANIFEST_IMPORTS, f"added: {sorted(added - MANIFEST_IMPORTS)}, gone: {sorted(MANIFEST_IMPORTS - added)}"


def test_the_handed_over_manifest_and_stage1s_records_add_nothing() -> None:
    """stage0 hands podrun's flavors the manifest in a memfd (podrun.abi): reading it, and the
    records stage1 writes (exit statuses, cgroup paths), import nothing (no json, hence no re)."""
    _, added = _stage1_modules(
        "import os; from podrun import abi, fsutil; from podrun.model.manifest import PodManifest; "
        "from podrun.pod import layout; "
        "os.environ[abi.ENV_MANIFEST_FD] = str(abi.manifest_memfd(PodManifest('u', ()).to_doc())); "
        "doc = abi.take_manifest_doc(); PodManifest.from_doc(doc); "
        "fsutil.numbers_json({'exit_code': 0, 'signal': None, 'finished': 1.5}); "
        "fsutil.strings_json(['/sys/fs/cgroup/podrun/pod-u'])"
    )
    assert added == set(), sorted(added)


def test_enter_imports_only_the_listed_modules() -> None:
    _, added = _stage1_modules("import podrun.stage1.default.enter")
    other = {m for m in added if m != "podrun" and not m.startswith("podrun.")}
    assert not other & {"re", "typing", "pathlib"}, sorted(other)
    assert other == ENTER_IMPORTS, f"added: {sorted(other - ENTER_IMPORTS)}, gone: {sorted(ENTER_IMPORTS - other)}"


def test_stage0_run_path_skips_http_and_schema_code() -> None:
    code = (
        "import sys; from podrun.cli import run; from podrun.stage0 import prepare; from podrun.image import api; "
        "print(','.join(m for m in ('jsonschema', 'pyroute2', 'urllib3', 'http.client') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_fast_run_path_skips_click() -> None:
    """``podrun run`` with well-formed flags never imports click (podrun.cli.runflags)."""
    code = (
        "import sys; from podrun.cli import runflags; "
        "f = runflags.fast_path(['--dir', '/nonexistent', 'run', 'img', '--exec', '/bin/true']); "
        "import podrun.stage0.launch, podrun.stage0.prepare, podrun.image.api, podrun.pod.seccomp_cache; "
        "print(f is not None, ','.join(m for m in ('click', 'typing', 'ctypes', 'hashlib', 'logging') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["True"], out.stdout


def test_the_oci_flavors_start_path_imports_what_the_default_one_does() -> None:
    """The oci flavor's supervisor, with what it loads per app (its config.json builder, the
    launcher's root checks, the JSON writer and the filter stage0 decided), imports no
    standard module beyond stage1's list: no json, re, dataclasses or the seccomp policy."""
    loaded, added = _stage1_modules(
        "import podrun.stage1.oci.run; from podrun.stage1.oci.spec import build_config; "
        "import podrun.stage2.app; from podrun.fsutil import doc_json, RawJSON; "
        "doc_json({'linux': {'seccomp': RawJSON(b'{}')}, 'args': ['sh', '-c', chr(34) + chr(92), 1, True, None]})"
    )
    other = {m for m in loaded | added if m != "podrun" and not m.startswith("podrun.")}
    assert other == STAGE1_IMPORTS, f"added: {sorted(other - STAGE1_IMPORTS)}, gone: {sorted(STAGE1_IMPORTS - other)}"
    assert not {m for m in added if m.startswith(("podrun.pod.seccomp", "podrun.isolation.seccomp"))}
