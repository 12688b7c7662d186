"""Plug-in variants (workflow/common/variants.py): a class in a file outside the package,
checked against its track's extension point; every way a plug-in can be wrong is one error
naming the file and what is wrong."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from workflow.common.errors import InputError
from workflow.common.variants import (
    EXTENSION_POINTS,
    Variant,
    check_variants,
    is_variant,
    load_variant,
    variant_files,
)


class Base:
    def required(self) -> int:
        raise NotImplementedError


class Point:
    """A base that leaves ``forward`` to its subclasses."""


def write(tmp_path: Path, source: str, name: str = "plugin.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def test_specs_name_a_file_or_a_module():
    assert is_variant("variants/distance/x.py:Net") and is_variant("pkg.mod:Net")
    for value in ("disnet", "x.py:", ":Net", "x.py:1Net", "a b.py:Net", None, 3):
        assert not is_variant(value), value
    v = Variant.parse("variants/distance/x.py:Net")
    assert (v.source, v.name, v.path) == ("variants/distance/x.py", "Net", Path(v.source))
    assert Variant.parse("json.decoder:JSONDecoder").path.name == "decoder.py"


def test_a_good_plugin_loads_and_records_its_file(tmp_path):
    path = write(tmp_path, f"""
        from {__name__} import Point

        class Good(Point):
            def forward(self):
                return 1
        """)  # fmt: skip
    cls = Variant.parse(f"{path}:Good").load(Point, ("forward",))
    assert cls.__name__ == "Good" and cls().forward() == 1
    record = Variant.parse(f"{path}:Good").provenance()
    assert record == {
        "spec": f"{path}:Good",
        "file": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def test_an_inherited_method_counts_only_from_below_the_base(tmp_path):
    """``required`` defined by the base itself or a subclass of it satisfies; one that comes
    from elsewhere in the MRO (``object``, a mixin outside the point) does not."""
    path = write(tmp_path, f"""
        from {__name__} import Base, Point

        class FromBase(Base):
            pass

        class Mixin:
            def forward(self):
                return 0

        class FromMixin(Point, Mixin):
            pass
        """)  # fmt: skip
    assert Variant.parse(f"{path}:FromBase").load(Base, ("required",)).__name__ == "FromBase"
    with pytest.raises(InputError, match=r"FromMixin does not define forward\(\)"):
        Variant.parse(f"{path}:FromMixin").load(Point, ("forward",))


@pytest.mark.parametrize(
    ("source", "name", "problem"),
    [
        (None, "Net", "variant file not found"),
        ("def broken(:\n", "Net", "cannot import: SyntaxError"),
        ("import not_a_module_anywhere\n", "Net", "cannot import: ModuleNotFoundError"),
        ("raise RuntimeError('boom')\n", "Net", "cannot import: RuntimeError: boom"),
        ("Net = 3\n", "Net", "defines no class Net"),
        ("class Other: pass\n", "Net", "defines no class Net"),
        ("class Net: pass\n", "Net", f"Net is not a subclass of {__name__}.Point"),
        (f"from {__name__} import Point\nclass Net(Point): pass\n", "Net",
         rf"Net does not define forward\(\) \(required of a {__name__}.Point\)"),
    ],
)  # fmt: skip
def test_a_bad_plugin_is_one_error_naming_its_file(tmp_path, source, name, problem):
    path = tmp_path / "plugin.py" if source is None else write(tmp_path, source)
    with pytest.raises(InputError, match=problem) as err:
        Variant.parse(f"{path}:{name}").load(Point, ("forward",))
    assert err.value.path == str(path)


def test_an_unimportable_module_is_named():
    with pytest.raises(InputError, match="variant module not found") as err:
        Variant.parse("no_such_package.heads:Net").load(Point)
    assert err.value.path == "no_such_package.heads"


def test_the_config_check_loads_the_variants_of_each_extension_point(tmp_path):
    """Only a track's extension points hold variants; a bad one stops the check."""
    good = write(tmp_path, """
        from workflow.distance.models import DisNet

        class Wider(DisNet):
            pass
        """, "good.py")  # fmt: skip
    bad = write(tmp_path, "from workflow.distance.models import DistanceModule\n"
                "class NoForward(DistanceModule): pass\n", "bad.py")  # fmt: skip
    assert set(EXTENSION_POINTS) >= {"distance"}
    experiments = [{"model": "disnet"}, {"model": f"{good}:Wider"}, {"backbone": "x.py:Y"}]
    check_variants("distance", experiments)
    assert variant_files("distance", experiments[1]) == [str(good)]
    assert variant_files("distance", experiments[2]) == []  # not an extension point
    assert load_variant("distance", "model", f"{good}:Wider").inputs == "geometry"
    with pytest.raises(InputError, match=r"NoForward does not define forward\(\)") as err:
        check_variants("distance", [*experiments, {"model": f"{bad}:NoForward"}])
    assert err.value.path == str(bad)


@pytest.mark.parametrize(
    ("track", "key"), [(t, k) for t, points in EXTENSION_POINTS.items() for k in points]
)
def test_every_extension_point_refuses_a_subclass_without_its_method(tmp_path, track, key):
    """Each track's base leaves its method to the variant, so a subclass that forgets it is
    one error naming the file and the method (none of the bases may define it itself)."""
    base, required = EXTENSION_POINTS[track][key]
    module, _, name = base.partition(":")
    path = write(tmp_path, f"from {module} import {name}\n\nclass Empty({name}):\n    pass\n",
                 f"empty_{track}.py")  # fmt: skip
    with pytest.raises(InputError) as err:
        load_variant(track, key, f"{path}:Empty")
    assert str(err.value) == (
        f"{path}: Empty does not define {required[0]}() (required of a {module}.{name})"
    )
