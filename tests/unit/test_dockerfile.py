"""docker/Dockerfile installs the wheel that tests/e2e/test_wheel.py tests.

No Docker daemon runs the build here, so this reads the file: a builder stage makes
the wheel with ``pip wheel --no-deps .`` from everything the build needs, and the
runtime stage installs that ``*.whl`` and copies no source.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[list[str]]:
        return [shlex.split(rest) for kw, rest in self.instructions if kw == keyword]

    def commands(self) -> list[list[str]]:
        """Every command of every RUN (split at ``&&`` and ``;``)."""
        found: list[list[str]] = []
        for words in self.args("RUN"):
            command: list[str] = []
            for word in [*words, "&&"]:
                if word in ("&&", ";"):
                    if command:
                        found.append(command)
                    command = []
                else:
                    command.append(word)
        return found


def stages() -> list[Stage]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, *alias = rest.split()
            result.append(Stage(alias[1] if alias[:1] == ["AS"] else None, base))
        else:
            result[-1].instructions.append((keyword, rest.strip()))
    return result


def pip(command: list[str], verb: str) -> list[str] | None:
    """The arguments after ``pip VERB`` (also ``python -m pip VERB``), or None."""
    for i, word in enumerate(command):
        if word in ("pip", "pip3") and command[i + 1 : i + 2] == [verb]:
            return command[i + 2 :]
    return None


def wheel_command(builder: Stage) -> list[str]:
    [args] = [a for c in builder.commands() if (a := pip(c, "wheel")) is not None]
    return args


def test_the_builder_makes_the_wheel_from_what_the_build_needs() -> None:
    builder = stages()[0]
    assert builder.name, "the first stage is the named builder"
    args = wheel_command(builder)
    assert "--no-deps" in args and "--wheel-dir" in args and args[-1] == ".", args
    copied = {src for words in builder.args("COPY") for src in words[:-1]}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = {"pyproject.toml", pyproject["project"]["readme"], "callrouter"}
    needed |= set(pyproject["tool"]["setuptools"]["package-dir"].values())
    needed |= {"setup.py"} if (REPO / "setup.py").exists() else set()
    assert needed <= copied, f"the builder does not copy {sorted(needed - copied)}"


def test_the_runtime_stage_installs_that_wheel_and_no_source() -> None:
    builder, runtime = stages()[0], stages()[-1]
    assert runtime is not builder and runtime.base == builder.base
    assert not runtime.args("ADD")
    copies = runtime.args("COPY")
    assert copies == [[f"--from={builder.name}", *c[1:]] for c in copies], (
        f"the runtime stage copies from the build context: {copies}"
    )
    args = wheel_command(builder)
    wheels = args[args.index("--wheel-dir") + 1]
    [(_, source, target)] = copies
    assert source == wheels, f"the runtime stage copies {source}, the wheel is in {wheels}"
    installs = [a for c in runtime.commands() if (a := pip(c, "install")) is not None]
    assert installs == [[f"{target}/*.whl"]], installs


def test_no_stage_installs_the_source_tree() -> None:
    for stage in stages():
        for command in stage.commands():
            args = pip(command, "install") or []
            assert "." not in args and not {"-e", "--editable"} & set(args), command
