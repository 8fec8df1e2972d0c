"""The package's face: the type stubs match the native module both ways, every public
thing has a docstring, and help() shows the signatures."""
import ast
import inspect
import pydoc
import sys
from pathlib import Path

import pytest

import qshm
from qshm import _qshm

STUB = Path(_qshm.__file__).with_name("_qshm.pyi")
# The buffer protocol's Python names exist from Python 3.12 on (PEP 688).
NEW_IN_312 = {"__buffer__", "__release_buffer__"}


def stub_classes():
    tree = ast.parse(STUB.read_text(encoding="utf-8"))
    classes = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    params = [a.arg for a in item.args.posonlyargs + item.args.args + item.args.kwonlyargs]
                    members[item.name] = params[1:] if params[:1] in (["self"], ["cls"]) else params
                elif isinstance(item, ast.AnnAssign):
                    members[item.target.id] = None
            classes[node.name] = members
    return classes


def public(cls):
    return {name for name in vars(cls) if not name.startswith("_")}


def test_the_stubs_name_everything_the_module_has_and_nothing_else():
    stubs = stub_classes()
    runtime = {name for name, obj in vars(_qshm).items() if isinstance(obj, type)}
    assert set(stubs) == runtime
    for name, members in stubs.items():
        cls = getattr(_qshm, name)
        stubbed = {m for m in members if not m.startswith("_")}
        assert stubbed == public(cls), name
        for member, params in members.items():
            if member in NEW_IN_312 and sys.version_info < (3, 12):
                continue
            if member == "__init__":
                obj = cls
            else:
                assert hasattr(cls, member), f"{name}.{member}"
                obj = getattr(cls, member)
            if params is None or isinstance(obj, property) or not callable(obj):
                continue
            if member.startswith("__") and member != "__init__":
                continue  # slots (__eq__, __enter__, ...): Python's own parameter names
            if inspect.isdatadescriptor(obj) or member in NEW_IN_312:
                continue
            try:
                sig = inspect.signature(obj)
            except (TypeError, ValueError):
                continue  # a slot wrapper without a text signature (__eq__, __int__, ...)
            names = [p for p in sig.parameters if p not in ("self", "cls")]
            assert names == params, f"{name}.{member}: runtime {names}, stub {params}"


def test_every_public_name_has_a_docstring():
    for name in qshm.__all__:
        obj = getattr(qshm, name)
        if not isinstance(obj, type):
            continue
        assert (obj.__doc__ or "").strip(), name
        if issubclass(obj, BaseException):
            continue  # its public names are plain attributes (kind, operation, key)
        for member in public(obj):
            attr = getattr(obj, member)
            if isinstance(attr, obj):  # enum members
                continue
            assert (attr.__doc__ or "").strip(), f"{name}.{member}"


def test_help_shows_signatures_and_the_example():
    text = pydoc.render_doc(qshm.SharedMemory, renderer=pydoc.plaintext)
    for expected in ("SharedMemory(key, *, type=None, lock_mode=None, permissions=None)",
                     "create(self, /, size, read_only=False)",
                     "lock(self, /, timeout=None)",
                     "wait_for_change(self, /, seen, timeout=None)",
                     'with qshm.SharedMemory("market") as shm:'):
        assert expected in text, expected
    guard = pydoc.render_doc(qshm.LockGuard, renderer=pydoc.plaintext)
    assert "valid\n |  only inside the block" in guard or "only inside the block" in guard


def test_reprs_say_what_things_are(key):
    shm = qshm.SharedMemory(key)
    assert repr(shm).startswith(f'<qshm.SharedMemory "{key}" native="systemv:/')
    assert repr(shm).endswith("not attached lock_mode=QtCompatible>")
    native = qshm.NativeIpcKey("/name")
    assert (native.native, native.type, native.legacy_key) == ("/name", qshm.KeyType.PosixRealtime, None)
    assert str(native) == native.to_string() == "posix:/name"
    assert eval(repr(native), {"qshm": qshm}) == native
    assert qshm.__version__ == "0.1.0"


def test_system_v_keys_of_any_ftok_project_id_keep_their_id():
    # Qt's QNativeIpcKey.Type(id): one Python KeyType for all System V ids, the id beside it
    other = qshm.NativeIpcKey.from_string("systemv-84:/tmp/x")
    assert (other.type, other.ftok_project_id, str(other)) == (qshm.KeyType.SystemV, 84, "systemv-84:/tmp/x")
    assert qshm.NativeIpcKey("/tmp/x", "systemv").ftok_project_id == 81
    assert qshm.NativeIpcKey("/name").ftok_project_id is None


@pytest.mark.parametrize("kind", ["systemv", "posix", qshm.KeyType.SystemV, qshm.KeyType.PosixRealtime])
def test_enums_and_their_names_are_both_accepted(key, kind):
    shm = qshm.SharedMemory(key, type=kind, lock_mode="fast")
    expected = kind if isinstance(kind, qshm.KeyType) else {
        "systemv": qshm.KeyType.SystemV, "posix": qshm.KeyType.PosixRealtime}[kind]
    assert shm.type == expected and shm.lock_mode == qshm.LockMode.Fast
