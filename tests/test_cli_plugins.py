"""Plugins: packages that declare a ``stereodrr.plugins`` entry point extend the command line."""

import importlib.metadata
import sys

import pytest

from stereodrr.cli import PLUGIN_GROUP, build_parser, load_plugins, main
from stereodrr.registration.similarity import SIMILARITIES

PLUGIN = '''
from stereodrr.registration.similarity import SIMILARITIES
SIMILARITIES["plugin_ncc"] = SIMILARITIES["ncc"]
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """An installed-looking plugin module and a broken one, found through the entry-point table."""
    (tmp_path / "my_stereodrr_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [importlib.metadata.EntryPoint("mine", "my_stereodrr_plugin", PLUGIN_GROUP),
           importlib.metadata.EntryPoint("broken", "no_such_module_here", PLUGIN_GROUP)]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: eps if kw.get("group") == PLUGIN_GROUP else real(**kw))
    yield
    SIMILARITIES.pop("plugin_ncc", None)
    sys.modules.pop("my_stereodrr_plugin", None)


def test_a_plugins_similarity_is_a_choice_of_register_and_a_broken_plugin_is_skipped(plugins):
    with pytest.warns(UserWarning, match=r"plugin 'broken' \(no_such_module_here\) was not loaded: No module"):
        parser = build_parser()
    args = parser.parse_args(["register", "--ct", "ct.mha", "--rig", "rig.json", "--images", "a.tif", "b.tif",
                              "-o", "out", "--similarity", "plugin_ncc"])
    assert args.similarity == "plugin_ncc" and SIMILARITIES["plugin_ncc"] is SIMILARITIES["ncc"]


def test_without_plugins_the_choice_is_refused(capsys):
    assert "plugin_ncc" not in SIMILARITIES
    with pytest.raises(SystemExit) as info:
        main(["register", "--ct", "c", "--rig", "r", "--images", "a", "b", "-o", "o", "--similarity", "plugin_ncc"])
    assert info.value.code == 2 and "invalid choice: 'plugin_ncc'" in capsys.readouterr().err


def test_the_real_entry_point_table_loads(recwarn):
    assert isinstance(load_plugins(), list)  # whatever is installed here loads or warns, never raises
