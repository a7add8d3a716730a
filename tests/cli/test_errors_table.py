"""docs/errors.md, "Errors and their fixes": the CLI prints each error as one line the table explains, and every
message teacli raises has its row (read from the sources with ast, so a new or reworded message needs one)."""

from __future__ import annotations

import ast
import itertools
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import torch
import yaml

from teacli.cli import app
from teacli.errors import reword
from teacli.models.catalog import builtin_presets, preset_to_dict

ROOT = Path(__file__).resolve().parents[2]
ERRORS_PAGE = ROOT / "docs" / "errors.md"  # README.md links to it
HEADING = "# Errors and their fixes"
PROMPT = "a red circle"
PLACEHOLDER = "…"
MIN_LITERAL = 12  # a message with less fixed text than this says too little to look up (str(error) and the like)

# The groups a user reaches from the command line; the API groups are exercised by calling the library.
CLI_GROUPS = {"Command line", "Model and loading", "Options", "Warnings", "Output files", "Presets"}
CLI_GROUPS |= {"Calibration and prompts"}
API_GROUPS = {"Python API (TeaCacheError)", "Writing an extractor (ExtractorContractError)"}

# Exceptions whose messages reach users: every subclass of teacli.errors.TeacliError (user_errors() below), so a
# new error class is checked with no edit here, less these, each with why. Keep it short.
INTERNAL_ERRORS = {
    "PeerError": "its messages are bench internals (teacli builds the settings it parses); UnknownPeerError is checked",
}
# Functions that build a message in several branches: every string they return is a message.
MESSAGE_FUNCTIONS = {"teacli/models/lora.py": {"_explain"}}
WARNING_FUNCTIONS = {"teacli/generation/checks.py": {"schedule_warning", "thresh_warning", "vocabulary_warning"}}
# Messages the static check may not find in the table, each with why. Keep it short.
ALLOWLIST: dict[str, str] = {}


# --- the section and its rows ------------------------------------------------------------------------------


def errors_section() -> str:
    """The whole page: its title, then one level-2 heading per group, each with its message | fix table."""
    text = ERRORS_PAGE.read_text(encoding="utf-8")
    assert text.startswith(HEADING + "\n"), f"{ERRORS_PAGE.relative_to(ROOT)} does not start with '{HEADING}'"
    return text


def test_the_readme_links_to_the_errors_page():
    assert "(docs/errors.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Row:
    group: str
    message: str
    fix: str

    @property
    def pattern(self) -> re.Pattern:
        """The message as a regex: `…` stands for any non-empty text, and more may follow the row's text."""
        return re.compile("^" + ".+?".join(re.escape(part) for part in self.message.split(PLACEHOLDER)), re.S)

    @property
    def literal(self) -> str:
        return self.message.replace(PLACEHOLDER, "")


CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")


def code_spans(cell: str) -> list[str]:
    """The code spans of a Markdown cell, with CommonMark's one stripped space each side."""
    spans = []
    for match in CODE_SPAN.finditer(cell):
        text = match.group(2)
        if len(text) > 2 and text.startswith(" ") and text.endswith(" "):
            text = text[1:-1]
        spans.append(text)
    return spans


@cache
def table_rows() -> tuple[Row, ...]:
    rows, group, in_table = [], None, False
    for line in errors_section().splitlines():
        if line.startswith("## "):
            group, in_table = line[3:].strip(), False
        elif re.fullmatch(r"\|\s*message\s*\|\s*fix\s*\|", line.strip()):
            in_table = True
        elif in_table and line.startswith("|") and not set(line) <= set("|- "):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            assert len(cells) == 2, f"a row needs a message and a fix: {line}"
            spans = code_spans(cells[0])
            assert len(spans) == 1, f"the message cell holds one message in backticks: {line}"
            rows.append(Row(group, spans[0], cells[1]))
        elif not line.startswith("|"):
            in_table = False
    return tuple(rows)


def matching_rows(message: str, groups: set[str] | None = None) -> list[Row]:
    return [row for row in table_rows() if row.pattern.match(message) and (groups is None or row.group in groups)]


def test_the_section_has_its_groups_and_well_formed_rows():
    rows = table_rows()
    assert {row.group for row in rows} == CLI_GROUPS | API_GROUPS
    for row in rows:
        assert len(row.literal.strip()) >= 7, f"too little fixed text to identify a message: {row}"
        assert len(row.fix) > 10, f"a fix says what to do: {row}"
        assert "..." not in row.message, f"write … (U+2026), not ..., for a varying part: {row}"
    duplicates = [m for m, n in itertools.groupby(sorted(r.message for r in rows)) if len(list(n)) > 1]
    assert not duplicates
    assert not matching_rows("an unrelated message that no row should match"), "a row matches anything"


# --- the command line: bad invocations ---------------------------------------------------------------------


def write_preset(path: Path, **changes) -> str:
    path.write_text(yaml.safe_dump(preset_to_dict(builtin_presets()["tiny-flux"]) | changes), encoding="utf-8")
    return str(path)


def model_index(directory: Path, **fields) -> str:
    directory.mkdir()
    (directory / "model_index.json").write_text(json.dumps({"_diffusers_version": "0.30.0", **fields}))
    return str(directory)


def strict_refusal(message: str) -> None:
    """A --strict refusal is a warning the Warnings table explains, with the refusal appended."""
    warning = message.removesuffix(" (refused because of --strict)")
    assert warning != message and matching_rows(warning, {"Warnings"}), message


# (id, group the message belongs to, how to build the arguments in the working directory, extra check)
CASES = [
    ("thresh-not-a-number", "Command line", lambda d, f: ["generate", PROMPT, "--thresh", "abc"]),
    ("unknown-option", "Command line", lambda d, f: ["generate", PROMPT, "--nope"]),
    ("missing-prompt", "Command line", lambda d, f: ["generate"]),
    ("device-choice", "Command line", lambda d, f: ["generate", PROMPT, "--device", "tpu"]),
    ("unknown-model", "Model and loading", lambda d, f: ["generate", PROMPT, "--model", "no-such-model"]),
    (
        "offline-unknown-hub-id",
        "Model and loading",
        lambda d, f: ["generate", PROMPT, "--model", "nobody/no-such-model", "--offline"],
    ),
    ("lora-missing", "Model and loading", lambda d, f: ["generate", PROMPT, "--lora", "missing.safetensors"]),
    (
        "lora-pickle-only",
        "Model and loading",
        lambda d, f: ["generate", PROMPT, "-m", "tiny-flux", "--lora", f["pickle_lora"], "-o", "x.png"],
    ),
    ("pickle-only-pipeline", "Model and loading", lambda d, f: ["generate", PROMPT, "-m", f["pickle_only"]]),
    (
        "no-transformer",
        "Model and loading",
        lambda d, f: ["generate", PROMPT, "-m", model_index(d / "sd", unet=["diffusers", "UNet2DConditionModel"])],
    ),
    (
        "transformer-without-extractor",
        "Model and loading",
        lambda d, f: ["generate", PROMPT, "-m", model_index(d / "m", transformer=["diffusers", "NoSuchModel"])],
    ),
    (
        "pipeline-as-code",
        "Model and loading",
        lambda d, f: ["generate", PROMPT, "-m", model_index(d / "c", _class_name=["evil", "EvilPipeline"])],
    ),
    ("start-above-end", "Options", lambda d, f: ["generate", PROMPT, "--start", "0.6", "--end", "0.4"]),
    ("cache-device", "Options", lambda d, f: ["generate", PROMPT, "--cache-device", "gpu"]),
    ("coefficients", "Options", lambda d, f: ["generate", PROMPT, "--coefficients", "1,abc"]),
    ("height", "Options", lambda d, f: ["generate", PROMPT, "--height", "0"]),
    ("fps-on-images", "Options", lambda d, f: ["generate", PROMPT, "--fps", "5"]),
    ("image-on-text-to-image", "Options", lambda d, f: ["generate", PROMPT, "-m", "tiny-flux", "--image", "a.png"]),
    ("against", "Options", lambda d, f: ["bench", "--against", "nocache"]),
    ("warmup", "Options", lambda d, f: ["bench", "--warmup", "-1"]),
    ("strict-steps", "Options", lambda d, f: ["generate", PROMPT, "--steps", "3", "--strict"], strict_refusal),
    ("strict-thresh", "Options", lambda d, f: ["generate", PROMPT, "--thresh", "3", "--strict"], strict_refusal),
    ("output-exists", "Output files", lambda d, f: ["generate", PROMPT, "--out", f["existing"]]),
    ("output-suffix", "Output files", lambda d, f: ["generate", PROMPT, "--out", "x.unknownext"]),
    ("output-directory-missing", "Output files", lambda d, f: ["generate", PROMPT, "--out", "missing/x.png"]),
    ("output-is-a-directory", "Output files", lambda d, f: ["generate", PROMPT, "--out", f["directory_png"]]),
    ("plot-suffix", "Output files", lambda d, f: ["bench", "--plot", "plot.jpg"]),
    ("preset-file-missing", "Presets", lambda d, f: ["generate", PROMPT, "--model", "missing.yaml"]),
    (
        "preset-malformed-yaml",
        "Presets",
        lambda d, f: ["generate", PROMPT, "-m", f["text"]("bad.yaml", "name: [unclosed\n")],
    ),
    (
        "preset-python-tag",
        "Presets",
        lambda d, f: ["generate", PROMPT, "-m", f["text"]("tag.yaml", "name: !!python/object/apply:os.system [ls]\n")],
    ),
    ("preset-unknown-field", "Presets", lambda d, f: ["generate", PROMPT, "-m", write_preset(d / "u.yaml", foo=1)]),
    ("preset-missing-field", "Presets", lambda d, f: ["generate", PROMPT, "-m", f["text"]("m.yaml", "name: m\n")]),
    (
        "preset-bad-number",
        "Presets",
        lambda d, f: ["generate", PROMPT, "-m", write_preset(d / "n.yaml", thresh="high")],
    ),
    (
        "preset-transformer-without-extractor",
        "Presets",
        lambda d, f: ["generate", PROMPT, "-m", write_preset(d / "t.yaml", transformer="UNet2DConditionModel")],
    ),
    ("presets-env-not-a-directory", "Presets", lambda d, f: (f["env"](str(d / "nowhere")), ["list-models"])[1]),
    ("presets-same-name", "Presets", lambda d, f: (f["env"](f["same_name_dir"]), ["list-models"])[1]),
    ("calibrate-steps", "Calibration and prompts", lambda d, f: ["calibrate", "--steps", "2"]),
    ("calibrate-order", "Calibration and prompts", lambda d, f: ["calibrate", "--order", "9"]),
    ("calibrate-name", "Calibration and prompts", lambda d, f: ["calibrate", "--name", " "]),
    ("calibrate-out", "Calibration and prompts", lambda d, f: ["calibrate", "--out", "preset.json"]),
    (
        "calibrate-empty-prompts",
        "Calibration and prompts",
        lambda d, f: ["calibrate", "--prompts", f["text"]("prompts.txt", "# only a comment\n\n")],
    ),
    ("calibrate-missing-prompts", "Calibration and prompts", lambda d, f: ["calibrate", "--prompts", "none.txt"]),
]
# Found while writing the table: a preset's modulated_input naming nothing the extractor offers raises
# ExtractorContractError, which the CLI does not treat as a user error, so it ends in a traceback.
# Found only when the extractor runs: its modulated_input names nothing the extractor offers.
PRESET_FOUND_AT_RUN = {
    "preset-modulated-input": (
        "Presets",
        lambda d, f: (
            ["generate", PROMPT, "-m", write_preset(d / "mi.yaml", name="mi", modulated_input="nope")]
            + ["--steps", "5", "-o", "mi.png"]
        ),
    )
}


def test_the_cases_reach_every_group_a_user_can_reach_from_the_command_line():
    assert {case[1] for case in CASES} == CLI_GROUPS - {"Warnings"}  # warnings: through --strict
    assert any(len(case) > 3 and case[3] is strict_refusal for case in CASES)


@pytest.fixture
def files(tmp_path, monkeypatch, pickled_flux):
    """Files some cases need, made in the working directory before the snapshot of what it holds."""
    (tmp_path / "existing.png").write_bytes(b"the user's file")
    (tmp_path / "dir.png").mkdir()
    lora = tmp_path / "lora-pickle"
    lora.mkdir()
    torch.save({"lora_A.weight": torch.zeros(1)}, lora / "pytorch_lora_weights.bin")
    same = tmp_path / "same-name"
    same.mkdir()
    write_preset(same / "a.yaml", name="twice")
    write_preset(same / "b.yml", name="twice")

    def text(name: str, content: str) -> str:
        (tmp_path / name).write_text(content, encoding="utf-8")
        return name

    return {
        "existing": "existing.png",
        "directory_png": "dir.png",
        "pickle_lora": str(lora),
        "pickle_only": str(pickled_flux),
        "same_name_dir": str(same),
        "text": text,
        "env": lambda value: monkeypatch.setenv("TEACLI_PRESETS", value),
    }


def run_bad(runner, tmp_path, files, make_args):
    args = make_args(tmp_path, files)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = runner.invoke(app, args)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    # Log lines may come first (a borrowed preset is announced); the error is one line, the last.
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("error: "), result.stderr
    assert not any(line.startswith("warning:") for line in lines), result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert isinstance(result.exception, (SystemExit, type(None))), repr(result.exception)  # not escaped
    assert after == before, "a refused command wrote something"
    return result, errors[0].removeprefix("error: ")


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_a_bad_invocation_prints_one_line_the_table_explains(runner, tmp_path, files, case):
    name, group, make_args, *check = case
    result, message = run_bad(runner, tmp_path, files, make_args)
    assert result.exit_code == (2 if group == "Command line" else 1), (result.exit_code, message)
    assert matching_rows(message, {group}), f"no row of '{group}' matches: {message}"
    for extra in check:
        extra(message)


@pytest.mark.parametrize("name", sorted(PRESET_FOUND_AT_RUN))
def test_a_preset_error_found_while_running_is_one_line(runner, tmp_path, files, name):
    group, make_args = PRESET_FOUND_AT_RUN[name]
    _, message = run_bad(runner, tmp_path, files, make_args)
    assert matching_rows(message, {group, "Writing an extractor (ExtractorContractError)"}), message


# --- the Python API ----------------------------------------------------------------------------------------


def api_errors() -> list[tuple[str, Exception]]:
    from support import make_flux_transformer
    from toy import BareToyTransformer

    from teacli import CacheContext, TeaCacheConfig, apply_teacache, get_extractor
    from teacli.engine.apply import apply_teacache as engine_apply
    from teacli.generation.media import read_metadata

    caught = []

    def attempt(group: str, call) -> None:
        with pytest.raises((ValueError, TypeError)) as error:
            call()
        caught.append((group, error.value))

    api = "Python API (TeaCacheError)"
    attempt(api, lambda: TeaCacheConfig(thresh=-1, coefficients=[1, 0]))
    attempt(api, lambda: TeaCacheConfig(coefficients=[]))
    attempt(api, lambda: engine_apply(make_flux_transformer(), TeaCacheConfig(thresh=0.2)))
    attempt(api, lambda: apply_teacache(BareToyTransformer(), TeaCacheConfig(thresh=0.2)))  # a class with no preset
    attempt(api, lambda: TeaCacheConfig(coefficients=[1, 0], start=0.6, end=0.4))
    attempt(api, lambda: TeaCacheConfig(coefficients=[1, 0], max_cached_in_row=0))
    transformer = make_flux_transformer()
    handle = apply_teacache(transformer, TeaCacheConfig(coefficients=[1, 0], num_inference_steps=4))
    attempt(api, lambda: apply_teacache(transformer, TeaCacheConfig(coefficients=[1, 0], num_inference_steps=4)))
    handle.remove()
    attempt(api, lambda: apply_teacache(object(), TeaCacheConfig(coefficients=[1, 0])))
    attempt(api, lambda: get_extractor("NoSuchTransformer2DModel"))
    attempt(api, lambda: read_metadata(Path("no-such-output.png")))
    tensor = torch.zeros(1, 2)
    context = dict(hidden_states=tensor, encoder_hidden_states=None, temb=tensor, postprocess=lambda *a: a)
    extractor = "Writing an extractor (ExtractorContractError)"
    attempt(extractor, lambda: CacheContext(modulated_input=[1.0], run_transformer_blocks=tuple, **context).validate())
    blocks = CacheContext(modulated_input=tensor, run_transformer_blocks=lambda: (tensor,), **context)
    attempt(extractor, lambda: blocks.check_block_outputs((tensor, tensor)))
    return caught


def test_python_api_errors_are_in_the_table():
    for group, error in api_errors():
        assert matching_rows(str(error), {group}), f"no row of '{group}' matches: {error}"


# --- every message in the sources has a row ----------------------------------------------------------------


SOURCES = sorted((ROOT / "teacli").rglob("*.py"))
CONSTANT_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@cache
def _trees() -> dict[str, ast.Module]:
    return {_relative(path): ast.parse(path.read_text(encoding="utf-8")) for path in SOURCES}


@cache
def _constants() -> dict[str, object]:
    """Module-level NAME = "text" / number across teacli, so messages read as the user sees them."""
    seen: dict[str, set] = {}
    for tree in _trees().values():
        for node in tree.body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
                continue
            target, value = node.targets[0], node.value
            pairs = (
                zip(target.elts, value.elts)
                if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                else [(target, value)]
            )
            for name, item in pairs:  # NAME = value, and A, B = 1, 6
                if isinstance(name, ast.Name) and CONSTANT_NAME.fullmatch(name.id) and isinstance(item, ast.Constant):
                    if isinstance(item.value, (str, int, float)) and not isinstance(item.value, bool):
                        seen.setdefault(name.id, set()).add(item.value)
    return {name: next(iter(values)) for name, values in seen.items() if len(values) == 1}


@cache
def _helpers() -> dict[str, ast.FunctionDef]:
    """Module-level functions whose body is one `return EXPR` (after a docstring): inlined where called."""
    found = {}
    for tree in _trees().values():
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
                if len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value is not None:
                    found[node.name] = node
    return found


def _bind(function: ast.FunctionDef, call: ast.Call, env: dict) -> dict:
    names = [arg.arg for arg in function.args.args]
    bound = {name: render(value, env) for name, value in zip(names, call.args)}
    bound.update({kw.arg: render(kw.value, env) for kw in call.keywords if kw.arg})
    return bound


@cache
def user_errors() -> frozenset[str]:
    """The classes defined in teacli that subclass TeacliError, however indirectly, less INTERNAL_ERRORS."""
    classes = [node for tree in _trees().values() for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    found, grew = {"TeacliError"}, True
    while grew:
        subclasses = {c.name for c in classes if any(ast.unparse(base).rpartition(".")[2] in found for base in c.bases)}
        grew = not subclasses <= found
        found |= subclasses
    return frozenset(found - {"TeacliError"} - INTERNAL_ERRORS.keys())


def test_every_user_error_is_a_teacli_error():
    """The static list agrees with Python's: each class imports and subclasses TeacliError, and the known ones
    are among them (a class that stopped deriving from it would drop out of the CLI's one catch)."""
    from teacli.errors import TeacliError

    errors = user_errors()
    known = {"CLIError", "ModelError", "PresetError", "OutputError", "TeaCacheError", "GenerationError"}
    known |= {"CalibrationError", "PromptsError", "PlotUnavailable", "OptionsError", "UnknownEmbeddedModel"}
    known |= {"UnknownTransformerError", "UnknownPeerError", "MissingShippedModel", "ExtractorContractError"}
    known |= {"ManifestError", "DistributedError", "PolicyError", "PlanError"}
    assert known <= errors
    defined = {
        cls.__name__
        for cls in _all_subclasses(TeacliError)
        if cls.__module__.startswith("teacli.") and _relative_module(cls.__module__) in _trees()
    }
    assert defined - INTERNAL_ERRORS.keys() <= errors


def _all_subclasses(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in {direct, *_all_subclasses(direct)}}


def _relative_module(module: str) -> str:
    path = module.replace(".", "/")
    return f"{path}/__init__.py" if (ROOT / path).is_dir() else f"{path}.py"


def _error_call(node: ast.AST) -> ast.Call | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in user_errors():
        return node
    return None


def render(node: ast.AST, env: dict | None = None) -> list[str]:
    """The texts a message expression can make, `…` for each part known only at run time."""
    env = env or {}
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        value = _constants().get(node.id)
        return [str(value)] if value is not None else [PLACEHOLDER]
    if isinstance(node, ast.JoinedStr):
        parts = [_formatted(v, env) if isinstance(v, ast.FormattedValue) else render(v, env) for v in node.values]
        return ["".join(combo) for combo in itertools.product(*parts)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return [a + b for a in render(node.left, env) for b in render(node.right, env)]
    if isinstance(node, ast.IfExp):
        return render(node.body, env) + render(node.orelse, env)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _helpers():
        function = _helpers()[node.func.id]
        returned = function.body[-1].value
        inner = _error_call(returned)
        return render(inner.args[0] if inner else returned, _bind(function, node, env))
    return [PLACEHOLDER]


def _formatted(node: ast.FormattedValue, env: dict) -> list[str]:
    """A {value!r:spec}: constants formatted as Python would, anything else a placeholder."""
    value = node.value
    if isinstance(value, ast.Name) and value.id not in env and value.id in _constants():
        spec = "".join(render(node.format_spec)) if node.format_spec else ""
        converted = {-1: lambda v: v, 114: repr, 115: str, 97: ascii}[node.conversion](_constants()[value.id])
        return [format(converted, spec)]
    texts = render(value, env)
    if node.conversion == 114 or node.format_spec is not None:  # !r or a spec on a run-time text
        return [text if PLACEHOLDER in text else PLACEHOLDER for text in texts]
    return texts


@dataclass(frozen=True)
class Message:
    where: str
    text: str  # as the command line prints it: the error's fields spelled as flags (teacli.errors)
    kind: str  # "error" or "warning"
    api: str = ""  # as the Python API raises it, where that differs

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.text, self.api) if self.api else (self.text,)


@cache
def cli_flags() -> dict[str, str]:
    """Field -> flag over every command: how the CLI words a TeacliError's `field` (cli._app.flag_names)."""
    from typer.main import get_command

    from teacli.cli._app import flag_names

    names: dict[str, str] = {}
    for command in get_command(app).commands.values():
        names |= flag_names(command)
    return names


def _fields(call: ast.Call | None) -> tuple[list[str], list[str]]:
    """The `field=` of an error call: the field names it gives as text, and the variables that hold one."""
    keyword = next((kw.value for kw in call.keywords if kw.arg == "field"), None) if call is not None else None
    items = keyword.elts if isinstance(keyword, (ast.Tuple, ast.List)) else [keyword] if keyword else []
    texts = [item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)]
    return texts, [item.id for item in items if isinstance(item, ast.Name)]


def _squeeze(text: str) -> str:
    return re.sub(f"{PLACEHOLDER}+", PLACEHOLDER, text)


@cache
def source_messages() -> tuple[Message, ...]:
    messages = []

    def add(where: str, node: ast.AST, kind: str = "error", env: dict | None = None, call: ast.Call | None = None):
        env = env or {}
        fields, variables = _fields(call)  # a variable field is a flag on the command line: `--…`
        api_texts = render(node, env)
        cli_texts = render(node, env | {name: ["--" + PLACEHOLDER] for name in variables})
        for api, cli in zip(api_texts, cli_texts, strict=True):
            cli = _squeeze(reword(cli, fields, cli_flags()))
            messages.append(Message(where, cli, kind, "" if _squeeze(api) == cli else _squeeze(api)))

    for path, tree in _trees().items():
        for node in ast.walk(tree):
            where = f"{path}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                call = node.exc
                if (inner := _error_call(call)) is not None and inner.args:
                    add(where, inner.args[0], call=inner)
                elif isinstance(call.func, ast.Name) and call.func.id in _helpers():
                    function = _helpers()[call.func.id]
                    if (inner := _error_call(function.body[-1].value)) is not None:
                        add(where, inner.args[0], env=_bind(function, call, {}), call=inner)
            elif isinstance(node, ast.ClassDef) and node.name in user_errors():
                for sub in ast.walk(node):  # super().__init__(f"...") in an error's own constructor
                    if isinstance(sub, ast.Call) and getattr(sub.func, "attr", "") == "__init__" and sub.args:
                        add(f"{path}:{sub.lineno}", sub.args[0])
            elif isinstance(node, ast.FunctionDef):
                kind = next(
                    (
                        k
                        for k, names in (("error", MESSAGE_FUNCTIONS), ("warning", WARNING_FUNCTIONS))
                        if node.name in names.get(path, ())
                    ),
                    None,
                )
                if kind is not None:
                    for sub in ast.walk(node):
                        if isinstance(sub, ast.Return) and sub.value is not None:
                            if not (isinstance(sub.value, ast.Constant) and sub.value.value is None):
                                add(f"{path}:{sub.lineno}", sub.value, kind)
    return tuple(messages)


def test_the_source_scan_reads_the_messages_as_users_see_them():
    texts = {m.text for m in source_messages()}
    # constants and helpers are resolved, conditional wording gives each variant
    assert "--steps must be at least 3 for calibration (each prompt gives steps - 1 pairs)" in texts
    assert "preset …: field 'defaults': expected a mapping with at least 'steps'" in texts
    assert "preset …: field 'defaults.…': missing" in texts  # a required setting's (teacli.settings)
    assert {"preset …: field '…': expected an integer, got …", "preset …: field '…': expected a number, got …"} <= texts
    assert any(t.startswith("model '…' uses …: TeaCache has no extractor for …; supported: …") for t in texts)
    assert any(t.startswith("unknown embedded model …; known: ") for t in texts)
    assert len([m for m in source_messages() if m.kind == "warning"]) == 3
    assert len(texts) > 150


def test_every_message_in_the_sources_has_a_row():
    misses, skipped = [], []
    for message in source_messages():
        if len(message.text.replace(PLACEHOLDER, "").strip()) < MIN_LITERAL:
            skipped.append(message)  # str(error) and the like: the message is made elsewhere
            continue
        if any(message.text.startswith(prefix) for prefix in ALLOWLIST):
            continue
        groups = {"Warnings"} if message.kind == "warning" else None
        if not any(matching_rows(text, groups) for text in message.texts):
            misses.append(f"{message.where}: {message.text}")
    assert not misses, "messages without a row in docs/errors.md:\n" + "\n".join(misses)
    assert len(skipped) < 15, skipped  # most messages are checked, not skipped


def _instance_of_a_flag_template(row_message: str) -> bool:
    """Whether the row spells out, for a real flag, a message whose field is a variable (`f"{name} must be …"`,
    raised with field=name, which the scan reads as `--… must be …`)."""
    flag = re.match(r"--[\w-]+", row_message)
    if flag is None or flag.group() not in cli_flags().values():
        return False
    templates = {m.text for m in source_messages() if m.text.startswith("--" + PLACEHOLDER)}
    return any(Row("", template, "").pattern.match(row_message) for template in templates)


def test_every_row_still_names_a_message_teacli_has():
    """A reworded message leaves its old row behind; each row's fixed text must be found in the sources."""
    constants = [
        node.value
        for tree in _trees().values()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    # A text that starts with a field, as the CLI words it (a message kept in a variable, raised with field=).
    worded = [reword(text, [text.split(" ", 1)[0]], cli_flags()) for text in constants]
    corpus = "\n".join([*(text for m in source_messages() for text in m.texts), *constants, *worded])
    stale = []
    for row in table_rows():
        if row.group == "Command line":  # Typer's and the interrupt handlers' wording
            continue
        if any(row.pattern.match(text) for message in source_messages() for text in message.texts):
            continue
        if _instance_of_a_flag_template(row.message):
            continue
        # A row more precise than the source's template (a message built in a variable): its own text is there.
        chunks = [c.strip(" '\"()`:;,.") for c in row.message.split(PLACEHOLDER)]
        if not any(chunk[:24] in corpus for chunk in chunks if len(chunk) >= MIN_LITERAL):
            stale.append(row.message)
    assert not stale, "rows no message in teacli matches:\n" + "\n".join(stale)
