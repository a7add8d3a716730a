"""User presets (TEACLI_PRESETS, the config directory, --model FILE.yaml) and --coefficients."""

import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from teacli.cli import app
from teacli.generation.caching import teacache_configs
from teacli.generation.policy import parse_coefficients
from teacli.models.catalog import (
    PresetError,
    all_presets,
    builtin_presets,
    find_preset,
    parse_preset,
    preset_to_dict,
    replaced_builtin,
    user_config_presets_dir,
    user_preset_dirs,
    user_presets,
)
from teacli.models.loading import resolve_preset

PROMPT = "a red circle on a blue background"
# These tests were written around tiny-flux as the default model: keep it so (fast, CFG-free).
pytestmark = pytest.mark.usefixtures("tiny_flux_default")

FAST = ["--steps", "4", "--device", "cpu"]
# rescaled distance always 0: every call but the forced first and last is cached (2 of 4), where the
# built-in tiny-flux caches fewer at 4 steps; so the run shows whose coefficients were used.
ZERO = [0.0, 0.0]
OPTION_SOURCE = "user (--coefficients)"


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """No preset directory of the machine's user leaks in: the config directory is under tmp_path."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TEACLI_PRESETS", raising=False)


@pytest.fixture
def config_dir():
    directory = user_config_presets_dir()
    if not str(directory).startswith(os.environ["XDG_CONFIG_HOME"]):
        pytest.skip("platformdirs ignores XDG_CONFIG_HOME on this OS")
    directory.mkdir(parents=True)
    return directory


@pytest.fixture
def runner(teacli_cache, monkeypatch, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


@pytest.fixture
def applied(monkeypatch):
    """The configs and handles apply_teacache got during a CLI run."""
    import teacli.engine.apply

    calls = []
    real = teacli.engine.apply.apply_teacache

    def spy(pipe, config):
        handle = real(pipe, config)
        calls.append((config, handle))
        return handle

    monkeypatch.setattr(teacli.engine.apply, "apply_teacache", spy)
    monkeypatch.setattr("teacli.bench.benchmark.apply_teacache", spy)
    monkeypatch.setattr("teacli.generation.generate.apply_teacache", spy)  # generate's own import of it
    return calls


def write_preset(directory: Path, filename: str, base: str = "tiny-flux", **changes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = preset_to_dict(builtin_presets()[base]) | changes
    path = directory / filename
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def set_env_dirs(monkeypatch, *dirs) -> None:
    monkeypatch.setenv("TEACLI_PRESETS", os.pathsep.join(str(d) for d in dirs))


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "Traceback" not in result.output
    return lines[0]


def invoke(runner, *args):
    return runner.invoke(app, list(args), catch_exceptions=False)


# --- where user presets come from -----------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="XDG_CONFIG_HOME is the Linux config location")
def test_config_dir_is_teacli_presets_under_xdg_config_home(tmp_path):
    assert user_config_presets_dir() == tmp_path / "xdg" / "teacli" / "presets"


def test_without_user_directories_only_builtins():
    assert user_preset_dirs() == [] and user_presets() == {}
    assert all_presets() == builtin_presets()
    assert not any(p.is_user for p in builtin_presets().values())


def test_user_preset_replaces_the_builtin_of_the_same_name_everywhere(tmp_path, monkeypatch):
    path = write_preset(tmp_path / "mine", "calibrated.yaml", coefficients=ZERO, coefficients_source="calibrated")
    set_env_dirs(monkeypatch, tmp_path / "mine")
    builtin = builtin_presets()["tiny-flux"]
    for found in (find_preset("tiny-flux"), find_preset("embedded:tiny-flux"), resolve_preset(None)):
        assert found.source == str(path) and found.coefficients == (0.0, 0.0)
        assert found.is_user and replaced_builtin(found) is builtin
    assert all_presets()["tiny-flux"].coefficients_kind == "calibrated"
    assert builtin_presets()["tiny-flux"] is builtin and not builtin.is_user  # the cached built-ins stay
    assert parse_preset(preset_to_dict(found), found.source) == found


def test_user_preset_with_same_model_but_new_name_wins_the_hub_id_lookup(tmp_path, monkeypatch):
    write_preset(tmp_path / "mine", "fd.yaml", base="flux-dev", name="flux-dev-calibrated", coefficients=ZERO)
    set_env_dirs(monkeypatch, tmp_path / "mine")
    assert find_preset("black-forest-labs/FLUX.1-dev").name == "flux-dev-calibrated"
    assert find_preset("flux-dev") is builtin_presets()["flux-dev"]  # by name, the built-in is still there


def test_precedence_env_dirs_in_order_then_config_dir(tmp_path, monkeypatch, config_dir):
    first, second = tmp_path / "first", tmp_path / "second"
    for directory in (first, second, config_dir):
        write_preset(directory, "tf.yaml", coefficients_source=f"from {directory.name}")
    write_preset(config_dir, "only-here.yml", name="only-in-config")
    source = lambda: find_preset("tiny-flux").coefficients_source  # noqa: E731
    set_env_dirs(monkeypatch, first, "", second)  # an empty entry is skipped
    assert source() == "from first"
    assert [d.name for d in user_preset_dirs()] == ["first", "second", "presets"]
    set_env_dirs(monkeypatch, second, first)
    assert source() == "from second"
    monkeypatch.delenv("TEACLI_PRESETS")
    assert source() == "from presets"
    assert find_preset("only-in-config").source == str(config_dir / "only-here.yml")


def test_new_name_user_preset_drives_generate(runner, tmp_path, monkeypatch, applied):
    write_preset(tmp_path / "mine", "x.yaml", name="my-tiny", coefficients=ZERO, coefficients_source="mine")
    set_env_dirs(monkeypatch, tmp_path / "mine")
    result = invoke(runner, "generate", PROMPT, "--model", "my-tiny", *FAST, "-o", "a.png")
    assert result.exit_code == 0, result.output
    assert "TeaCache on my-tiny" in result.output
    config, handle = applied[0]
    assert config.coefficients == ZERO and config.coefficients_source == "mine"
    assert handle.stats.totals.cached == 2


def test_generate_by_builtin_name_uses_the_user_coefficients(runner, config_dir, applied):
    write_preset(config_dir, "tiny-flux.yaml", coefficients=ZERO, coefficients_source="calibrated here")
    result = invoke(runner, "generate", PROMPT, "--model", "tiny-flux", *FAST, "-o", "a.png")
    assert result.exit_code == 0, result.output
    assert "coefficients: calibrated here" in " ".join(result.stderr.split())
    config, handle = applied[0]
    assert config.coefficients == ZERO and handle.stats.totals.cached == 2


def test_builtin_tiny_flux_caches_fewer_at_four_steps(runner, applied):
    """The control for the tests above: their 2 cached calls come from the user's coefficients."""
    assert invoke(runner, "generate", PROMPT, *FAST, "-o", "a.png").exit_code == 0
    assert applied[0][1].stats.totals.cached < 2


def test_borrowing_takes_the_users_replacement_of_the_donor(tmp_path, monkeypatch):
    write_preset(tmp_path / "mine", "fd.yaml", base="flux-dev", coefficients=ZERO, coefficients_source="calibrated")
    set_env_dirs(monkeypatch, tmp_path / "mine")
    pipeline = tmp_path / "my-flux-pipeline"
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text(
        json.dumps({"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"]})
    )
    preset = resolve_preset(str(pipeline))
    assert preset.coefficients == (0.0, 0.0)
    assert preset.coefficients_source == "borrowed from flux-dev (calibrated)"


# --- list-models ----------------------------------------------------------------------------------


def table_rows(output: str) -> dict[str, str]:
    return {line.split("│")[1].strip(): line for line in output.splitlines() if line.count("│") > 5}


def test_list_models_marks_user_presets_and_their_files(runner, tmp_path, monkeypatch, config_dir):
    flux_dev = write_preset(config_dir, "fd.yaml", base="flux-dev", coefficients_source="calibrated")
    new = write_preset(tmp_path / "mine", "new.yaml", name="my-tiny")
    set_env_dirs(monkeypatch, tmp_path / "mine")
    result = invoke(runner, "list-models")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert "calibrated" in rows["flux-dev (user)"] and "flux-dev" not in rows
    # tiny-flux is the default in this module (tiny_flux_default)
    assert "my-tiny (test, user)" in rows and "tiny-flux (default, test)" in rows and "flux-schnell" in rows
    lines = result.output.splitlines()
    assert f"  flux-dev (user): {flux_dev}, replaces the built-in flux-dev" in lines
    assert f"  my-tiny (user): {new}, a new preset" in lines
    assert str(tmp_path / "mine") in result.output.split("user presets (searched in order")[1].splitlines()[0]


def test_list_models_without_user_presets_says_where_they_go(runner):
    result = invoke(runner, "list-models")
    assert result.exit_code == 0
    assert f"user presets: none (preset .yaml files in {user_config_presets_dir()}" in result.output
    assert not any("user" in name for name in table_rows(result.output))


# --- broken user directories and files ------------------------------------------------------------


def test_broken_user_preset_fails_list_models_and_generate_naming_file_and_field(runner, config_dir):
    path = write_preset(config_dir, "broken.yaml", name="other", thresh="high")
    for args in (["list-models"], ["generate", PROMPT, *FAST, "-o", "a.png"]):
        line = one_error_line(runner.invoke(app, args))
        assert f"preset {path}: field 'thresh'" in line
    assert not Path("a.png").exists()


def test_two_files_with_one_name_in_one_directory_are_an_error_naming_both(runner, tmp_path, monkeypatch):
    a = write_preset(tmp_path / "mine", "a.yaml")
    b = write_preset(tmp_path / "mine", "b.yml")
    set_env_dirs(monkeypatch, tmp_path / "mine")
    line = one_error_line(runner.invoke(app, ["list-models"]))
    assert str(a) in line and str(b) in line and "'tiny-flux'" in line


def test_same_name_in_two_directories_is_not_an_error(tmp_path, monkeypatch):
    write_preset(tmp_path / "a", "x.yaml", coefficients_source="a")
    write_preset(tmp_path / "b", "x.yaml", coefficients_source="b")
    set_env_dirs(monkeypatch, tmp_path / "a", tmp_path / "b")
    assert user_presets()["tiny-flux"].coefficients_source == "a"


def test_missing_teacli_presets_directory_is_an_error(runner, tmp_path, monkeypatch):
    set_env_dirs(monkeypatch, tmp_path / "typo")
    line = one_error_line(runner.invoke(app, ["generate", PROMPT, *FAST, "-o", "a.png"]))
    assert f"TEACLI_PRESETS names {tmp_path / 'typo'}, which is not a directory" in line
    with pytest.raises(PresetError, match="not a directory"):
        user_presets()


def test_missing_config_directory_is_normal():
    assert not user_config_presets_dir().exists()
    assert user_preset_dirs() == []


# --- --model FILE.yaml ----------------------------------------------------------------------------


def test_model_file_by_relative_absolute_and_home_path(runner, tmp_path, monkeypatch, applied):
    path = write_preset(tmp_path / "work" / "sub", "p.yaml", name="from-file", coefficients=ZERO)
    monkeypatch.setenv("HOME", str(tmp_path))
    for given in ("sub/p.yaml", str(path), "~/work/sub/p.yaml"):
        preset = resolve_preset(given)
        assert preset.name == "from-file" and Path(preset.source).resolve() == path.resolve() and preset.is_user
    result = invoke(runner, "generate", PROMPT, "--model", "sub/p.yaml", *FAST, "-o", "a.png")
    assert result.exit_code == 0, result.output
    assert "TeaCache on from-file" in result.output and applied[0][0].coefficients == ZERO


def test_model_file_inside_a_user_directory_loads_as_itself(tmp_path, monkeypatch):
    path = write_preset(tmp_path / "mine", "tf.yaml", coefficients_source="mine")
    set_env_dirs(monkeypatch, tmp_path / "mine")
    assert resolve_preset(str(path)) == find_preset("tiny-flux")


BAD_FILES = [
    ("missing.yaml", None, "preset file missing.yaml does not exist"),
    ("bad.yaml", "name: [unclosed\n", "not valid YAML at line"),
    ("evil.yaml", "name: !!python/object/apply:os.system ['touch pwned']\n", "!!python/object are not allowed"),
    ("list.yml", "- just\n- a list\n", "expected a mapping of fields, got list"),
    ("empty.yaml", "", "expected a mapping of fields, got NoneType"),
]


@pytest.mark.parametrize("name, text, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_model_file_is_one_line(runner, name, text, message):
    if text is not None:
        Path(name).write_text(text)
    line = one_error_line(runner.invoke(app, ["generate", PROMPT, "--model", name, *FAST, "-o", "a.png"]))
    assert message in line and name in line
    assert not Path("a.png").exists() and not Path("pwned").exists()


def test_model_file_that_is_a_directory(runner):
    Path("folder.yaml").mkdir()
    assert "is not a file" in one_error_line(runner.invoke(app, ["generate", PROMPT, "--model", "folder.yaml"]))


# --- --coefficients -------------------------------------------------------------------------------


def test_parse_coefficients():
    assert parse_coefficients(None) is None
    assert parse_coefficients("1, -2.5,3e-2") == (1.0, -2.5, 0.03)


def test_generate_coefficients_override_in_report_and_config(runner, applied):
    result = invoke(runner, "generate", PROMPT, *FAST, "--coefficients", "0,0", "-o", "a.png")
    assert result.exit_code == 0, result.output
    config, handle = applied[0]
    assert config.coefficients == ZERO and config.coefficients_source == OPTION_SOURCE
    assert handle.stats.totals.cached == 2
    assert f"coefficients: {OPTION_SOURCE}\n" in result.output
    assert "--coefficients 0, 0 used in place of the preset's (borrowed from flux-dev" in result.output
    assert f"coefficients: {OPTION_SOURCE}" in " ".join(result.stderr.split())


def test_generate_coefficients_override_a_user_preset_too(runner, config_dir, applied):
    write_preset(config_dir, "tf.yaml", coefficients=[0.0, 100.0], rel_l1_range=[0.0, 0.5])
    assert invoke(runner, "generate", PROMPT, *FAST, "--coefficients=0,0", "-o", "a.png").exit_code == 0
    config = applied[0][0]
    assert config.coefficients == ZERO and config.rel_l1_range is None  # the range belonged to the other fit


def test_bench_coefficients_override_in_title_and_json(runner, applied):
    args = ["bench", "--thresh", "0.3", "--runs", "1", "--warmup", "0", "--coefficients", "0,0", "--json", "b.json"]
    args += ["--against", "none"]
    result = invoke(runner, *args, *FAST)
    assert result.exit_code == 0, result.output
    assert f"coefficients: {OPTION_SOURCE}" in " ".join(result.output.split())
    data = json.loads(Path("b.json").read_text())
    assert data["coefficients_source"] == OPTION_SOURCE and data["coefficients"] == ZERO
    rows = {row["name"]: row for row in data["rows"]}
    assert rows["teacache@0.3"]["computed"] == 2  # first and last forced, the middle two cached
    assert all(config.coefficients == ZERO for config, _ in applied)


def test_teacache_configs_coefficients_apply_to_every_denoiser():
    preset = builtin_presets()["tiny-wan22"]
    assert preset.experts, "tiny-wan22 is the two-expert preset"
    plain = teacache_configs(preset)
    configs = teacache_configs(preset, 0.3, coefficients=(1.0, 2.0), coefficients_source="given")
    assert set(configs) == set(plain) and len(configs) == 2
    for name, config in configs.items():
        assert config.coefficients == [1.0, 2.0] and config.coefficients_source == "given"
        assert config.thresh == 0.3 and config.rel_l1_range is None
        assert config.ret_steps == plain[name].ret_steps
        assert plain[name].coefficients != [1.0, 2.0]


BAD_COEFFICIENTS = [
    ("1", "got 1 number(s)"),
    ("1,2,3,4,5,6,7,8", "got 8 number(s)"),
    ("1,abc,3", "'abc' is not a number"),
    ("1,,3", "'' is not a number"),
    ("1,inf", "'inf' is not finite"),
    ("nan,1", "'nan' is not finite"),
]


@pytest.mark.parametrize("command", ["generate", "bench"])
@pytest.mark.parametrize("value, message", BAD_COEFFICIENTS, ids=[b[0] for b in BAD_COEFFICIENTS])
def test_bad_coefficients_are_refused_before_loading(runner, monkeypatch, command, value, message):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("teacli.models.loading.load_pipeline", no_loading)
    args = [command, *([PROMPT] if command == "generate" else []), "--coefficients", value, *FAST]
    line = one_error_line(runner.invoke(app, args))
    assert "--coefficients takes 2-7 comma-separated numbers, highest power first" in line and message in line
    assert list(Path.cwd().iterdir()) == []
