"""The chart README's install commands are the ones the tests render: every `helm` command on
charts/bert-eval in its code blocks (and the helm command `make deploy` runs for the kind walkthrough)
is rendered with its values files and `--set` flags by the real Helm engine and validated, every
`--set` it mentions is a key of values.yaml, every file it names exists, and each first install
creates the namespace and the Secrets its release reads before `helm install`."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from support.k8s import (
    CHART_SRC,
    CRD_KINDS,
    KUBE_VERSION,
    MANIFESTS,
    NAMESPACE,
    PROFILES,
    RELEASE,
    REPO,
    all_containers,
    make_dry_run,
    pod_templates,
)

README = CHART_SRC / "README.md"
CHART_PATH = "charts/bert-eval"
FIRST_INSTALL_SECTIONS = ("On your machine with kind", "On a cloud GPU pool (GKE, EKS)")
# helm options that take a value (as one following argument); any other option must be a known flag.
HELM_VALUE_OPTIONS = {"-n", "--namespace", "-f", "--values", "--set", "--version", "--timeout", "--kube-context"}
HELM_FLAGS = {"--install", "--reuse-values", "--reset-then-reuse-values", "--wait", "--create-namespace"}
# A file a reader is told about: a path with one of these endings (or a services/Dockerfile.*).
FILE_PATTERN = re.compile(r"^(?:\./)?[\w.*/-]+\.(?:ya?ml|json|py|md|sh|tpl|txt)$|^services/Dockerfile\.\w+$")


def _sections(text: str) -> dict[str, str]:
    """`## Title` -> the text up to the next `## ` heading."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def _blocks(text: str) -> list[str]:
    """The bash code blocks (list-item indentation removed)."""
    return [
        re.sub(r"^ {0,4}", "", body, flags=re.MULTILINE)
        for body in re.findall(r"^ *```bash\n(.*?)^ *```", text, flags=re.MULTILINE | re.DOTALL)
    ]


def _commands(script: str) -> list[list[str]]:
    """Shell commands of a script as argument lists: continuations joined, comments dropped, and
    `&&`, `;` and `|` taken as separators."""
    commands: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        for token in lexer:
            if token in {"&&", ";", "|", "||"}:
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _set(values: dict[str, Any], assignment: str) -> dict[str, Any]:
    """values with one `--set key.path=value` applied (scalars typed as YAML, as helm types them)."""
    key, _, raw = assignment.partition("=")
    tree: Any = yaml.safe_load(raw) if raw else ""
    for part in reversed(key.split(".")):
        tree = {part: tree}
    return _merge(values, tree)


def _defaults() -> dict[str, Any]:
    return yaml.safe_load((CHART_SRC / "values.yaml").read_text())


def _is_chart_value(key: str) -> bool:
    node: Any = _defaults()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


class HelmCommand:
    """`helm upgrade [--install] RELEASE charts/bert-eval ...`, parsed as helm would."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.positional: list[str] = []
        self.options: list[tuple[str, str]] = []
        self.flags: set[str] = set()
        args = iter(argv[1:])
        for arg in args:
            if arg in HELM_VALUE_OPTIONS:
                self.options.append((arg, next(args)))
            elif arg.startswith("--") and "=" in arg and arg.split("=", 1)[0] in HELM_VALUE_OPTIONS:
                self.options.append(tuple(arg.split("=", 1)))  # type: ignore[arg-type]
            elif arg.startswith("-"):
                assert arg in HELM_FLAGS, (
                    f"`{' '.join(argv)}`: option {arg} is not one this test knows; add it to HELM_FLAGS"
                )
                self.flags.add(arg)
            else:
                self.positional.append(arg)

    @property
    def installs(self) -> bool:
        return self.positional[:1] == ["install"] or (self.positional[:1] == ["upgrade"] and "--install" in self.flags)

    @property
    def release(self) -> str:
        return self.positional[1]

    @property
    def namespace(self) -> str | None:
        return next((v for o, v in self.options if o in {"-n", "--namespace"}), None)

    @property
    def values_files(self) -> list[str]:
        return [v for o, v in self.options if o in {"-f", "--values"}]

    def values(self, reused: dict[str, Any]) -> dict[str, Any]:
        """What helm renders with: the reused values, then each values file, then each --set, in order."""
        values = copy.deepcopy(reused) if self.flags & {"--reuse-values", "--reset-then-reuse-values"} else {}
        for option, value in self.options:
            if option in {"-f", "--values"}:
                values = _merge(values, yaml.safe_load((REPO / value).read_text()) or {})
        for option, value in self.options:
            if option == "--set":
                values = _set(values, value)
        return values


def _bert_eval_helm(command: list[str]) -> HelmCommand | None:
    if command[:1] != ["helm"] or CHART_PATH not in command:
        return None
    parsed = HelmCommand(command)
    if parsed.positional[:1] in (["install"], ["upgrade"]) and parsed.positional[2:3] == [CHART_PATH]:
        return parsed
    return None


def _kind_deploy_script() -> str:
    """What `make deploy` runs (the kind walkthrough's install), as a script."""
    return "\n".join(line.removesuffix("\\").strip() for line in make_dry_run("deploy"))


def _scripts() -> list[tuple[str, list[list[list[str]]]]]:
    """(where, its scripts' commands in order) for each README section and for `make deploy`."""
    sections = [
        (f"README '{title}'", [_commands(block) for block in _blocks(body)])
        for title, body in _sections(README.read_text()).items()
    ]
    return [*sections, ("make deploy", [_commands(_kind_deploy_script())])]


def _install_scripts() -> list[tuple[str, list[list[str]]]]:
    """(where, commands) of every script (one code block, or `make deploy`) that installs charts/bert-eval."""
    return [
        (where, commands)
        for where, scripts in _scripts()
        for commands in scripts
        if any((h := _bert_eval_helm(c)) and h.installs for c in commands)
    ]


def _render_and_validate(render, helm_chart, values: dict[str, Any], command: HelmCommand) -> None:
    helm_chart.validate_schema(values)
    rendered = render(values, name=command.release, namespace=command.namespace or "default")
    for obj in rendered.objects:
        if obj["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def _secrets_read(objects: list[dict[str, Any]]) -> set[tuple[str, str | None]]:
    """(Secret name, key) every pod of the release reads (key None: the whole Secret as a volume)."""
    found: set[tuple[str, str | None]] = set()
    for _owner, template in pod_templates(objects):
        spec = template["spec"]
        for container in all_containers(spec):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    found.add((ref["name"], ref["key"]))
        for volume in spec.get("volumes", []):
            if "secret" in volume and not volume["secret"].get("optional"):
                found.add((volume["secret"]["secretName"], None))
    return found


def _secrets_created(commands: list[list[str]]) -> dict[str, set[str]]:
    """Secret name -> keys, for each `kubectl ... create secret generic NAME --from-literal=KEY=...`."""
    created: dict[str, set[str]] = {}
    for command in commands:
        if command[:1] == ["kubectl"] and "create" in command and "secret" in command:
            name = command[command.index("secret") + 2]
            keys = {arg.split("=")[1] for arg in command if arg.startswith("--from-literal=")}
            keys |= {Path(arg.split("=", 1)[1]).name for arg in command if arg.startswith("--from-file=")}
            created[name] = keys
    return created


def test_readme_names_an_install_command_for_kind_gke_and_eks() -> None:
    profiles = [
        f
        for _where, commands in _install_scripts()
        for c in commands
        if (h := _bert_eval_helm(c))
        for f in h.values_files
    ]
    for profile in ("values-kind.yaml", "values-gke.yaml", "values-eks.yaml"):
        path = f"{CHART_PATH}/examples/{profile}"
        assert path in profiles, f"no install command with -f {path} in the chart README or `make deploy`"
        # ... and it is a profile every chart test renders and validates.
        assert f"examples/{profile.removeprefix('values-').removesuffix('.yaml')}" in PROFILES


def test_every_helm_command_on_the_chart_renders_and_validates(render, helm_chart) -> None:
    rendered = []
    for where, scripts in _scripts():
        installed: dict[
            str, list[dict[str, Any]]
        ] = {}  # release -> the values each earlier install of the section used
        for command in (c for commands in scripts for c in commands):
            helm = _bert_eval_helm(command)
            if helm is None:
                continue
            shown = " ".join(command)
            assert (helm.release, helm.namespace) == (RELEASE, NAMESPACE), (
                f"{where}: `{shown}` installs {helm.release} in {helm.namespace}; "
                f"manifests/ assume {RELEASE} in {NAMESPACE}"
            )
            for path in helm.values_files:
                assert (REPO / path).is_file(), f"{where}: `{shown}` reads {path}, which does not exist"
            if helm.flags & {"--reuse-values", "--reset-then-reuse-values"}:
                assert helm.release in installed, (
                    f"{where}: `{shown}` reuses the values of a release no earlier command installed"
                )
                bases = installed[helm.release]
            else:
                bases = [{}]
            results = [helm.values(base) for base in bases]
            for values in results:
                _render_and_validate(render, helm_chart, values, helm)
                rendered.append((where, shown))
            if helm.installs:
                installed.setdefault(helm.release, []).extend(results)
    wheres = {where for where, _ in rendered}
    assert {"make deploy", "README 'On a cloud GPU pool (GKE, EKS)'"} <= wheres, wheres


def test_readme_and_make_deploy_set_only_real_chart_values() -> None:
    text = README.read_text() + "\n" + _kind_deploy_script()
    flags = re.findall(r"--set[ =]([\w.\[\]-]+)=", text)
    assert flags, "the README names no --set flag"
    for key in flags:
        assert _is_chart_value(key), f"--set {key}=... is not a value of charts/bert-eval/values.yaml"


def test_every_file_the_readme_names_exists() -> None:
    text = README.read_text()
    named = set(re.findall(r"`([^`\s]+)`", text))
    for _where, scripts in _scripts():
        for command in (c for commands in scripts for c in commands):
            named |= {command[i + 1] for i, arg in enumerate(command[:-1]) if arg in {"-f", "--values"}}
    paths = sorted(p for p in named if FILE_PATTERN.match(p) and not p.startswith("/"))
    assert any(p.endswith("values-gke.yaml") for p in paths) and any(p.startswith("manifests/") for p in paths)
    for path in paths:
        # Relative to the repository root (where the commands run) or to the chart (`examples/...`).
        matches = [m for base in (REPO, CHART_SRC) for m in base.glob(path.removeprefix("./"))]
        assert matches, (
            f"the chart README names {path}, which exists neither under the repository root nor under {CHART_PATH}"
        )


def test_first_installs_create_the_namespace_and_the_secrets_before_helm_install(render) -> None:
    namespace_manifest = str((MANIFESTS / "namespace.yaml").relative_to(REPO))
    (namespace,) = [
        d for d in yaml.safe_load_all((MANIFESTS / "namespace.yaml").read_text()) if d and d["kind"] == "Namespace"
    ]
    assert namespace["metadata"]["name"] == NAMESPACE
    checked = set()
    for where, commands in _install_scripts():
        for index, command in enumerate(commands):
            helm = _bert_eval_helm(command)
            if helm is None or not helm.installs:
                continue
            before = commands[:index]
            applies_namespace = any(c[:1] == ["kubectl"] and "apply" in c and namespace_manifest in c for c in before)
            assert applies_namespace or "--create-namespace" in helm.flags, (
                f"{where}: `{' '.join(command)}` runs before `kubectl apply -f {namespace_manifest}` "
                f"(namespace {NAMESPACE}, restricted)"
            )
            rendered = render(helm.values({}), name=helm.release, namespace=helm.namespace)
            created = _secrets_created(before)
            for name, key in sorted(_secrets_read(rendered.objects), key=str):
                assert name in created, (
                    f"{where}: the release reads Secret {name}, which no command before `{' '.join(command)}` creates"
                )
                assert key is None or key in created[name], f"{where}: Secret {name} is created without key {key}"
            checked.add(tuple(helm.values_files))
    assert (f"{CHART_PATH}/examples/values-eks.yaml",) in checked  # the profile that reads a Secret


def test_temporal_cloud_search_attributes_are_added_to_the_namespace_the_release_uses(render) -> None:
    from bert_eval.temporal.names import SEARCH_ATTRIBUTE_NAMES

    found = 0
    for where, commands in _install_scripts():
        tcld = [c for c in commands if c[:3] == ["tcld", "namespace", "search-attributes"]]
        helm = next((h for c in commands if (h := _bert_eval_helm(c)) and h.installs), None)
        for command in tcld:
            assert helm is not None
            rendered = render(helm.values({}), name=helm.release, namespace=helm.namespace)
            training = rendered.workload("training-worker")["spec"]["template"]["spec"]["containers"][0]
            temporal_namespace = next(e["value"] for e in training["env"] if e["name"] == "TEMPORAL_NAMESPACE")
            assert command[command.index("--namespace") + 1] == temporal_namespace, (
                f"{where}: tcld adds them to another namespace"
            )
            added = {command[i + 1].split("=")[0] for i, arg in enumerate(command[:-1]) if arg == "--search-attribute"}
            assert added == set(SEARCH_ATTRIBUTE_NAMES), (
                f"{where}: tcld adds {added}, the workers set {SEARCH_ATTRIBUTE_NAMES}"
            )
            found += 1
    assert found, "no tcld command next to the Temporal Cloud (EKS) install"


def test_kind_walkthrough_runs_make_targets_the_makefile_defines() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):(?!=)", makefile, flags=re.MULTILINE))
    kind = _sections(README.read_text())[FIRST_INSTALL_SECTIONS[0]]
    run = [c[1] for block in _blocks(kind) for c in _commands(block) if c[:1] == ["make"]]
    assert run[:4] == ["kind-up", "kind-images", "kind-load", "deploy"], run
    assert set(run) <= targets, f"the kind walkthrough runs make targets the Makefile lacks: {set(run) - targets}"


def test_first_install_sections_exist() -> None:
    sections = _sections(README.read_text())
    for title in FIRST_INSTALL_SECTIONS:
        assert title in sections and _blocks(sections[title]), f"README section '{title}' is missing or has no commands"
    assert "make deploy" in sections[FIRST_INSTALL_SECTIONS[0]]


def test_starter_experiment_example_is_a_valid_experiment() -> None:
    from bert_eval.experiment import parse_experiment

    path = f"{CHART_PATH}/examples/starter-experiment.yaml"
    experiment = parse_experiment(yaml.safe_load((REPO / path).read_text())["starter"]["experiment"], source=path)
    defaults = _defaults()["starter"]["experiment"]
    # Its ids differ from the default experiment's, so submitting it next to the default starts new workflows.
    assert experiment.id != defaults["experiment_id"]
    assert not {r.id for r in experiment.runs} & {r["run_id"] for r in defaults["runs"]}
