"""Every rule that depends on a feature kind lives in its registered class, and only there."""

import ast
import inspect
import pkgutil
from pathlib import Path

import pytest

import melstore
from melstore.errors import ConfigError
from melstore.features.kinds import FEATURE_KINDS, FeatureKind, feature_kind, register_kind
from melstore.features.presets import PRESETS, resolve_feature_set

PACKAGE = Path(melstore.__file__).parent
# the modules allowed to name kinds: the base's and those of the registered classes
REGISTRY_MODULES = {Path(inspect.getfile(FeatureKind)).relative_to(PACKAGE).as_posix()} | {
    Path(inspect.getfile(type(kind))).relative_to(PACKAGE).as_posix()
    for kind in FEATURE_KINDS.values()
}
# every module of the package, subpackages included, so a new one cannot dodge the scan
MODULES = sorted(path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py"))
DECLARED_METHODS = sorted(
    name
    for name, value in vars(FeatureKind).items()
    if getattr(value, "__isabstractmethod__", False)
)
DECLARED_ATTRIBUTES = sorted(FeatureKind.__annotations__)


@pytest.mark.parametrize("name", sorted(FEATURE_KINDS))
def test_every_kind_has_a_class_defining_all_the_base_declares(name):
    kind = feature_kind(name)
    cls = type(kind)
    assert issubclass(cls, FeatureKind) and not inspect.isabstract(cls)
    assert kind.name == name
    # defined by the class or a shared base below FeatureKind, never left to FeatureKind
    own = {a for base in cls.__mro__[: cls.__mro__.index(FeatureKind)] for a in vars(base)}
    assert not [a for a in DECLARED_METHODS + DECLARED_ATTRIBUTES if a not in own]
    for method in DECLARED_METHODS:
        base = inspect.signature(getattr(FeatureKind, method))
        assert inspect.signature(getattr(cls, method)) == base, f"{cls.__name__}.{method}"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_kind_resolves(preset):
    params = resolve_feature_set(preset, {})
    kind = feature_kind(params.kind)
    assert kind.name == params.kind in FEATURE_KINDS
    assert params.n_bins == kind.n_bins(params) > 0


def test_an_unknown_kind_is_one_line_naming_the_key_and_the_choices():
    problem = f"unknown feature kind 'mfcc'; choose one of: {', '.join(sorted(FEATURE_KINDS))}"
    with pytest.raises(ConfigError) as err:
        feature_kind("mfcc")
    assert str(err.value) == f"config key 'kind': {problem}"
    with pytest.raises(ConfigError) as err:
        resolve_feature_set("mine", {"mine": {"preset": "seed", "kind": "mfcc"}})
    assert str(err.value) == f"config key 'feature_sets.mine.kind': {problem}"


def test_a_second_class_under_a_registered_name_is_refused():
    taken = type(feature_kind("logmel"))
    with pytest.raises(ValueError, match="'logmel' is registered twice"):
        register_kind(type("Again", (taken,), {}))
    assert type(feature_kind("logmel")) is taken


def kind_name_uses(source: str) -> list[int]:
    """Lines that compare a kind's name, list kind names, or key a dict by them."""
    names = set(FEATURE_KINDS)

    def strings(node) -> set:
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return set().union(*map(strings, node.elts))
        return {node.value} if isinstance(node, ast.Constant) else set()

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            used = set().union(*map(strings, [node.left, *node.comparators])) & names
        elif isinstance(node, ast.MatchValue | ast.Tuple | ast.List | ast.Set):
            used = strings(getattr(node, "value", node)) & names
        elif isinstance(node, ast.Dict):  # keyed by kind names only (preset names are data)
            keys = set().union(*(strings(k) for k in node.keys if k is not None))
            used = keys if keys and keys <= names else set()
        else:
            continue
        if used:
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize(
    "source",
    [
        'n = p.n_mels if p.kind != "logspec" else 0',
        'mel = kind in ("logmel", "vggish")',
        'MEL = ["logmel", "vggish"]',
        'label = {"logmel": "dB", "logspec": "ln"}[kind]',
        'match kind:\n    case "vggish":\n        pass',
    ],
)
def test_the_scan_finds_each_way_of_testing_a_kind_name(source):
    assert kind_name_uses(source)


def test_the_scan_reads_every_module_python_imports_and_the_registry_is_among_them():
    imported = {"__init__.py"}
    for module in pkgutil.walk_packages(melstore.__path__, "melstore."):
        path = module.name.removeprefix("melstore.").replace(".", "/")
        imported.add(f"{path}/__init__.py" if module.ispkg else f"{path}.py")
    assert any("/" in name for name in imported) and set(MODULES) == imported
    assert REGISTRY_MODULES <= imported


@pytest.mark.parametrize("module", [m for m in MODULES if m not in REGISTRY_MODULES])
def test_no_module_outside_the_registry_tests_a_kind_name(module):
    assert kind_name_uses((PACKAGE / module).read_text()) == [], module
