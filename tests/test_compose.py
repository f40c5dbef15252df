"""The container stack agrees with the project: docker-compose.yml, the Dockerfile and .dockerignore.

No Docker engine is needed: the files are parsed and checked against pyproject.toml, settings.Settings,
the console scripts and workflows.search_attributes. The one-shot temporal-setup script is run by
bash against a fake `temporal` CLI.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from datetime import timedelta
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from temporalio.common import SearchAttributeIndexedValueType

import worker
from settings import Settings
from workflows import search_attributes

ROOT = Path(__file__).resolve().parent.parent

SERVICES = {"postgresql", "temporal", "temporal-ui", "temporal-setup", "migrate", "worker", "api"}
APP_SERVICES = ("migrate", "worker", "api")
LONG_RUNNING_APP_SERVICES = ("worker", "api")
ENV_PREFIX = "TRANSFER_"

# How `temporal operator search-attribute create --type` names SearchAttributeIndexedValueType.
CLI_TYPE_NAMES = {
    SearchAttributeIndexedValueType.TEXT: "Text",
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}


# --- reading the files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) instruction argument; shell form is split like a shell would."""
    if arguments.startswith("["):
        parsed = json.loads(arguments)
        assert isinstance(parsed, list)
        return [str(item) for item in parsed]
    return shlex.split(arguments)


_VARIABLE = re.compile(
    r"\$\$"
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: `$$` is a literal `$`; ${VAR}, ${VAR:-default}, ${VAR:?error}, $VAR."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op is not None and op.endswith("-") and unset:
            return arg
        if op is not None and op.endswith("?") and unset:
            raise LookupError(f"{name}: {arg}")
        return current or ""

    return _VARIABLE.sub(substitute, value)


def environment(service: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A service's environment (mapping or list form), interpolated with `env`."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, None) for item in raw)
    assert isinstance(raw, dict)
    resolved = {}
    for key, value in raw.items():
        text = "" if value is None else str(value)
        resolved[str(key)] = text if env is None else interpolate(text, env)
    return resolved


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Dependency -> condition; the short (list) form means service_started."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def command(service: Mapping[str, Any]) -> list[str]:
    raw = service.get("command")
    assert raw, "no command"
    return shlex.split(raw) if isinstance(raw, str) else [str(item) for item in raw]


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def duration(text: str) -> timedelta:
    """A Compose duration: `45s`, `1m30s`, `2m`, `500ms`."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?", text.strip())
    assert parts and text.strip(), f"not a duration: {text!r}"
    hours, minutes, seconds, millis = (int(group or 0) for group in parts.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds, milliseconds=millis)


def setup_script(services: Mapping[str, Mapping[str, Any]]) -> str:
    """The temporal-setup command as the container's shell receives it."""
    return interpolate("\n".join(command(services["temporal-setup"])), {})


def search_attribute_args(script: str) -> dict[str, str]:
    pairs = re.findall(r"--name\s+(\w+)\s+--type\s+(\w+)", script)
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"a search attribute is registered twice: {names}"
    return dict(pairs)


# --- docker-compose.yml: structure ---------------------------------------------------------------


def test_compose_has_the_seven_services_and_no_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the Compose Specification has no `version:`"
    assert set(compose["services"]) == SERVICES


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image"
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image} has no tag"
        assert tag != "latest", f"{name}: image {image} is not pinned"


def test_app_services_run_the_image_built_from_the_dockerfile(
    services: dict[str, dict[str, Any]], pyproject: dict[str, Any]
) -> None:
    images = set()
    for name in APP_SERVICES:
        service = services[name]
        build = service.get("build")
        context = build.get("context", ".") if isinstance(build, dict) else build
        dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
        assert context in (".", "./"), f"{name}: not built from this repository"
        assert dockerfile == "Dockerfile"
        images.add(service["image"])
    assert len(images) == 1, f"the app services tag different images: {images}"
    (image,) = images
    assert image.rpartition(":")[2] == pyproject["project"]["version"], "tag the image with the version"
    for name in set(services) - set(APP_SERVICES):
        assert "build" not in services[name], f"{name} is a published image"


def test_startup_order(services: dict[str, dict[str, Any]]) -> None:
    after_jobs = dict.fromkeys(("migrate", "temporal-setup"), "service_completed_successfully")
    expected = {
        "temporal": {"postgresql": "service_healthy"},
        "temporal-ui": {"temporal": "service_healthy"},
        "temporal-setup": {"temporal": "service_healthy"},
        "migrate": {"postgresql": "service_healthy"},
        "worker": after_jobs,
        "api": after_jobs,
    }
    for name, required in expected.items():
        actual = depends_on(services[name])
        for dependency, condition in required.items():
            assert actual.get(dependency) == condition, f"{name} must wait for {dependency}: {condition}"


def test_dependencies_are_satisfiable(services: dict[str, dict[str, Any]]) -> None:
    """Every condition can come true: healthy needs a healthcheck, completed needs a one-shot job."""
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            assert dependency in services, f"{name} depends on an unknown service {dependency}"
            target = services[dependency]
            if condition == "service_healthy":
                assert target.get("healthcheck", {}).get("test"), f"{dependency} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dependency} must be a one-shot job"
            else:
                assert condition == "service_started", f"{name}: unknown condition {condition}"
    # No cycle: peel off the services whose dependencies are all started.
    remaining = {name: set(depends_on(service)) for name, service in services.items()}
    while remaining:
        ready = {name for name, needs in remaining.items() if not needs & remaining.keys()}
        assert ready, f"depends_on has a cycle among {sorted(remaining)}"
        for name in ready:
            del remaining[name]


def test_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in ("postgresql", "temporal", "api"):
        check = services[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test must be CMD or CMD-SHELL"
    assert "pg_isready" in " ".join(services["postgresql"]["healthcheck"]["test"])
    assert "7233" in " ".join(services["temporal"]["healthcheck"]["test"])
    api_check = " ".join(services["api"]["healthcheck"]["test"])
    api_port = environment(services["api"], {"TRANSFER_ADMIN_TOKEN": "t", "TRANSFER_SECRET_KEY": "k"})[
        "TRANSFER_API_PORT"
    ]
    assert "curl" not in api_check and "wget" not in api_check, "python:*-slim has neither"
    assert services["api"]["healthcheck"]["test"][1] == "python"
    assert "urllib" in api_check and f":{api_port}/healthz" in api_check


def test_jobs_run_once_and_services_restart(services: dict[str, dict[str, Any]]) -> None:
    for name in ("temporal-setup", "migrate"):
        assert services[name].get("restart") == "no", f"{name} is a one-shot job"
    for name in LONG_RUNNING_APP_SERVICES:
        assert services[name].get("restart") in ("unless-stopped", "always"), f"{name} must restart"


def test_worker_has_time_for_a_graceful_shutdown(services: dict[str, dict[str, Any]]) -> None:
    grace = duration(str(services["worker"].get("stop_grace_period", "10s")))
    assert grace >= timedelta(seconds=30)
    assert grace > worker.GRACEFUL_SHUTDOWN, "Compose would SIGKILL the worker while it drains"


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    def targets(name: str) -> set[str]:
        return {str(port).rsplit(":", 1)[-1] for port in services[name].get("ports", [])}

    assert "ports" not in services["temporal"], "a client of the frontend could start and signal workflows"
    assert services["temporal-ui"]["ports"] == ["127.0.0.1:8233:8080"], "the UI has no sign-in: local only"
    assert "8000" in targets("api")
    assert "ports" not in services["postgresql"], "the database is for the stack only"


# --- docker-compose.yml: configuration -----------------------------------------------------------


def test_shared_environment_comes_from_the_x_app_env_extension(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    shared = compose.get("x-app-env")
    assert isinstance(shared, dict) and shared, "x-app-env holds the shared TRANSFER_* settings"
    for name in APP_SERVICES:
        env = environment(services[name])
        for key, value in shared.items():
            assert env.get(key) == str(value), f"{name} lacks {key} of x-app-env"


def test_every_transfer_variable_is_a_setting(services: dict[str, dict[str, Any]]) -> None:
    fields = Settings.model_fields
    assert Settings.model_config.get("env_prefix") == ENV_PREFIX
    for name, service in services.items():
        for key in environment(service):
            if key.startswith(ENV_PREFIX):
                assert key.removeprefix(ENV_PREFIX).lower() in fields, f"{name}: {key} is no setting"


def test_no_shell_variable_is_left_to_compose_interpolation(compose: dict[str, Any]) -> None:
    """A `$var` meant for a container's shell must be written `$$var`, or Compose replaces it."""
    for text in strings(compose):
        rest = text.replace("$$", "")
        for match in re.finditer(r"\$", rest):
            assert re.match(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}", rest[match.start() :]), (
                f"unescaped $ in {text!r}"
            )
    script = "\n".join(str(line) for line in compose["services"]["temporal-setup"]["command"])
    assert "${" not in script.replace("$${", ""), "the setup script's variables are the shell's"


def test_admin_token_is_required(services: dict[str, dict[str, Any]]) -> None:
    with pytest.raises(LookupError, match="TRANSFER_ADMIN_TOKEN"):
        environment(services["api"], {"TRANSFER_SECRET_KEY": "k"})
    worker = environment(services["worker"], {"TRANSFER_SECRET_KEY": "k"})
    assert "TRANSFER_ADMIN_TOKEN" not in worker, "only the API needs the token"


@pytest.mark.parametrize("name", ["worker", "api"])
def test_the_secret_key_is_required_by_the_worker_and_the_api(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    with pytest.raises(LookupError, match="TRANSFER_SECRET_KEY"):
        environment(services[name], {"TRANSFER_ADMIN_TOKEN": "t"})
    both = environment(services[name], {"TRANSFER_ADMIN_TOKEN": "t", "TRANSFER_SECRET_KEY": "k"})
    assert both["TRANSFER_SECRET_KEY"] == "k"
    assert "TRANSFER_SECRET_KEY" not in environment(services["migrate"]), "migrations sign nothing"


@pytest.mark.parametrize("password", [None, "s3cret"])
@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_settings_point_at_the_stack(
    name: str,
    password: str | None,
    services: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host_env = {"TRANSFER_ADMIN_TOKEN": "admin-token", "TRANSFER_SECRET_KEY": "secret-key"}
    if password is not None:
        host_env["POSTGRES_PASSWORD"] = password
    for key in os.environ:
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in environment(services[name], host_env).items():
        monkeypatch.setenv(key, value)
    config = Settings()

    database = environment(services["postgresql"], host_env)
    assert config.database_url is not None
    url = urlsplit(config.database_url)
    assert url.scheme == "postgresql+asyncpg"
    assert url.hostname == "postgresql" and url.hostname in services
    assert url.port == 5432
    assert url.path == f"/{database['POSTGRES_DB']}"
    assert url.username == database["POSTGRES_USER"]
    assert url.password == database["POSTGRES_PASSWORD"] == (password or url.password)

    host, _, port = config.temporal_address.partition(":")
    assert (host, port) == ("temporal", "7233") and host in services
    assert config.namespace == "default"
    if name == "api":
        assert config.api_host == "0.0.0.0"
        assert config.admin_token is not None and config.admin_token.get_secret_value() == "admin-token"
        assert any(str(p).endswith(f":{config.api_port}") for p in services["api"]["ports"])


def test_temporal_uses_the_same_database_server(services: dict[str, dict[str, Any]]) -> None:
    host_env = {"POSTGRES_PASSWORD": "s3cret"}
    temporal = environment(services["temporal"], host_env)
    database = environment(services["postgresql"], host_env)
    assert temporal["DB"] == "postgres12"
    assert temporal["POSTGRES_SEEDS"] == "postgresql"
    assert temporal["DB_PORT"] == "5432"
    assert temporal["POSTGRES_USER"] == database["POSTGRES_USER"]
    assert temporal["POSTGRES_PWD"] == database["POSTGRES_PASSWORD"] == "s3cret"
    # auto-setup creates its own databases unless they are named after the user.
    assert database["POSTGRES_DB"] not in ("temporal", "temporal_visibility")
    assert environment(services["temporal-ui"])["TEMPORAL_ADDRESS"] == "temporal:7233"


# --- entry points ----------------------------------------------------------------------------------


def resolve(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def test_commands_are_console_scripts(
    services: dict[str, dict[str, Any]], pyproject: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    scripts = pyproject["project"]["scripts"]
    assert scripts.get("transfer-worker") == "worker:main"
    assert scripts.get("transfer") == "starter.cli:app"
    default = [exec_form(arguments) for keyword, arguments in dockerfile if keyword == "CMD"][-1]
    assert default == ["transfer-worker"]
    assert command(services["worker"]) == ["transfer-worker"]
    for name in APP_SERVICES:
        assert command(services[name])[0] in scripts, f"{name} runs no console script"


def test_worker_entry_point_imports() -> None:
    assert callable(resolve("worker:main"))


def test_transfer_entry_point_has_the_subcommands_used(
    services: dict[str, dict[str, Any]], pyproject: dict[str, Any]
) -> None:
    """Needs starter/cli (the `transfer` Typer app)."""
    app = resolve(pyproject["project"]["scripts"]["transfer"])
    assert isinstance(app, typer.Typer)
    # Typer vendors its own click: ask the command for its subcommands rather than its class.
    commands = set(getattr(typer.main.get_command(app), "commands", {}))
    used = {command(services[name])[1] for name in APP_SERVICES if command(services[name])[0] == "transfer"}
    assert used == {"migrate", "api"}
    assert used <= commands, f"`transfer` lacks {sorted(used - commands)}"


# --- temporal-setup --------------------------------------------------------------------------------


def test_setup_registers_the_workflow_search_attributes(services: dict[str, dict[str, Any]]) -> None:
    script = setup_script(services)
    expected = {key.name: CLI_TYPE_NAMES[key.indexed_value_type] for key in search_attributes.ALL}
    assert search_attribute_args(script) == expected
    assert "temporal operator search-attribute create --namespace default" in script
    assert "temporal operator namespace create --namespace default" in script
    assert "operator cluster health" in script, "the job waits for the server"
    setup = services["temporal-setup"]
    assert environment(setup)["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert setup["entrypoint"][0].endswith("bash"), "the admin-tools image only sleeps by default"


FAKE_TEMPORAL = r'''
"""A stand-in for the `temporal` CLI: just what temporal-setup uses, state in state.json."""
import json
import sys
from pathlib import Path

STATE = Path(__file__).with_name("state.json")
state = json.loads(STATE.read_text())
args = sys.argv[1:]
state["calls"].append(args)


def option(name):
    return args[args.index(name) + 1] if name in args else None


def finish(code=0, out="", err=""):
    STATE.write_text(json.dumps(state))
    print(out, end="")
    print(err, end="", file=sys.stderr)
    sys.exit(code)


namespace = option("--namespace")
namespaces = state["namespaces"]
if args[:3] == ["operator", "cluster", "health"]:
    finish(out="SERVING\n")
if args[:3] == ["operator", "namespace", "describe"]:
    finish(0) if namespace in namespaces else finish(1, err="Namespace not found\n")
if args[:3] == ["operator", "namespace", "create"]:
    if namespace in namespaces:
        finish(1, err="Namespace already exists\n")
    namespaces[namespace] = {"retention": option("--retention"), "attributes": {}}
    state["cache_misses"] = state.get("cache_delay", 0)
    finish(0)
if namespace not in namespaces:
    finish(1, err="Namespace not found\n")
attributes = namespaces[namespace]["attributes"]
if args[:3] == ["operator", "search-attribute", "list"]:
    if state.get("cache_misses", 0) > 0:
        state["cache_misses"] -= 1
        finish(1, err="Namespace not found\n")
    rows = {"WorkflowId": "Keyword", "StartTime": "Datetime", **attributes}
    table = "  Name  |  Type\n" + "".join(f"  {n}  |  {t}\n" for n, t in rows.items())
    finish(out=table)
if args[:3] == ["operator", "search-attribute", "create"]:
    if state.get("refuse"):
        finish(1, err="rpc error: code = Unavailable\n")
    names = [args[i + 1] for i, a in enumerate(args) if a == "--name"]
    types = [args[i + 1] for i, a in enumerate(args) if a == "--type"]
    raced = [n for n in names if n in state.get("race", [])]
    for name, type_ in zip(names, types):
        if name in attributes and name not in raced:
            finish(1, err=f"Search attribute {name} already exists\n")
        attributes[name] = type_
    if raced:  # another client added them a moment earlier
        finish(1, err=f"Search attribute {raced[0]} already exists\n")
    finish(0)
finish(2, err=f"unexpected: {args}\n")
'''


def run_setup(
    services: dict[str, dict[str, Any]], tmp_path: Path, state: dict[str, Any]
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    setup = services["temporal-setup"]
    entrypoint = [str(part) for part in setup["entrypoint"]]
    if not Path(entrypoint[0]).exists():
        pytest.skip(f"{entrypoint[0]} is not on this machine")
    fake = tmp_path / "temporal"
    fake.write_text(f"#!{sys.executable}\n{FAKE_TEMPORAL}")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "state.json").write_text(json.dumps({"calls": [], "namespaces": {}, **state}))
    env = {**os.environ, **environment(setup, {}), "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.run(
        [*entrypoint, setup_script(services)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return process, json.loads((tmp_path / "state.json").read_text())


def creates(state: dict[str, Any]) -> list[list[str]]:
    return [call for call in state["calls"] if call[:3] == ["operator", "search-attribute", "create"]]


def test_setup_script_registers_namespace_and_attributes(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    process, state = run_setup(services, tmp_path, {"cache_delay": 1})
    assert process.returncode == 0, process.stderr
    expected = {key.name: CLI_TYPE_NAMES[key.indexed_value_type] for key in search_attributes.ALL}
    namespace = state["namespaces"]["default"]
    assert namespace["attributes"] == expected
    assert namespace["retention"] == environment(services["temporal-setup"], {})["NAMESPACE_RETENTION"]
    assert len(creates(state)) == len(expected)


def test_setup_script_is_idempotent(services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    expected = {key.name: CLI_TYPE_NAMES[key.indexed_value_type] for key in search_attributes.ALL}
    done = {"default": {"retention": "72h", "attributes": dict(expected)}}
    process, state = run_setup(services, tmp_path, {"namespaces": done})
    assert process.returncode == 0, process.stderr
    assert not creates(state)
    assert not [call for call in state["calls"] if call[:3] == ["operator", "namespace", "create"]]


def test_setup_script_tolerates_already_exists(services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    partial = {"default": {"retention": "72h", "attributes": {"TransferStatus": "Keyword"}}}
    process, state = run_setup(services, tmp_path, {"namespaces": partial, "race": ["ResourceId"]})
    assert process.returncode == 0, process.stderr
    assert set(state["namespaces"]["default"]["attributes"]) == {key.name for key in search_attributes.ALL}


def test_setup_script_fails_when_the_server_refuses(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    process, _ = run_setup(services, tmp_path, {"refuse": True})
    assert process.returncode != 0, "a failed registration must fail the job, so worker and api wait"


# --- Dockerfile and .dockerignore ------------------------------------------------------------------


def installed_top_level(pyproject: dict[str, Any]) -> set[str]:
    """The files and folders setuptools installs: py-modules and the packages.find include roots."""
    tool = pyproject["tool"]["setuptools"]
    modules = {f"{module}.py" for module in tool.get("py-modules", [])}
    packages = {pattern.rstrip("*").rstrip(".") for pattern in tool["packages"]["find"]["include"]}
    return modules | packages


def copied_sources(dockerfile: list[tuple[str, str]]) -> list[str]:
    sources = []
    for keyword, arguments in dockerfile:
        if keyword in ("COPY", "ADD"):
            parts = [part for part in exec_form(arguments) if not part.startswith("--")]
            sources += [source.rstrip("/") for source in parts[:-1]]
    return sources


def test_dockerfile_copies_what_pyproject_installs(
    dockerfile: list[tuple[str, str]], pyproject: dict[str, Any]
) -> None:
    sources = copied_sources(dockerfile)
    assert "pyproject.toml" in sources
    missing = installed_top_level(pyproject) - set(sources)
    assert not missing, f"the Dockerfile does not copy {sorted(missing)}"
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"


def test_dockerfile_installs_then_drops_root(dockerfile: list[tuple[str, str]]) -> None:
    keywords = [keyword for keyword, _ in dockerfile]
    assert dockerfile[0] == ("FROM", "python:3.11-slim")
    runs = [(i, arguments) for i, (keyword, arguments) in enumerate(dockerfile) if keyword == "RUN"]
    install, pip = next((i, arguments) for i, arguments in runs if "pip install" in arguments)
    assert re.search(r"pip install --no-cache-dir \.(\s|$)", pip), "install the copied tree itself"
    last_copy = max(i for i, keyword in enumerate(keywords) if keyword in ("COPY", "ADD"))
    assert last_copy < install, "pip install runs after the sources are copied"
    users = [(i, arguments) for i, (keyword, arguments) in enumerate(dockerfile) if keyword == "USER"]
    assert users, "the image must not run as root"
    position, user = users[-1]
    assert position > install
    assert user.split(":")[0] not in ("root", "0")
    env = " ".join(arguments for keyword, arguments in dockerfile if keyword == "ENV")
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops `path` (Docker's rules, closely enough: later `!` re-includes)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            tail = pattern[3:]
            candidates = ["/".join(parts[i : j + 1]) for i in range(len(parts)) for j in range(i, len(parts))]
            hit = any(fnmatch(candidate, tail) for candidate in candidates)
        else:
            hit = any(fnmatch(prefix, pattern) for prefix in prefixes)
        if hit:
            result = not negated
    return result


def test_dockerignore(dockerfile: list[tuple[str, str]]) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for local_state in (".venv", ".git", "data", "tests", "transfer.db", "data/transfer.db", ".pytest_cache"):
        assert ignored(local_state, patterns), f".dockerignore keeps {local_state}"
    assert ignored("store/__pycache__/db.cpython-311.pyc", patterns)
    for source in copied_sources(dockerfile):
        top = ROOT / source
        files = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" in file.parts:
                continue
            assert not ignored(relative, patterns), f".dockerignore drops {relative}, which the image needs"
