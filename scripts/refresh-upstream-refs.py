#!/usr/bin/env python3
"""Regenerates tests/fixtures/upstream/: the key lists the stack's configs are checked against,
extracted from each pinned release's own repository. Only extracted key paths, component names
and flags are written, never upstream code.

    scripts/refresh-upstream-refs.py PROJECT=GITDIR@TAG ...

PROJECT is one of tempo, loki, prometheus, collector (the core repository), releases
(opentelemetry-collector-releases, whose otelcol-contrib manifest lists the distribution's
components), contrib (opentelemetry-collector-contrib, also for its OTTL functions), grafana
(grafana/grafana: the structs its provisioning files are read into) and grafana-schemas
(grafana/grafana-foundation-sdk, whose jsonschema/ folder is Grafana's dashboard and panel schemas
generated from one Grafana release line's kind registry). GITDIR is a clone (bare or not) and
TAG the release tag, read with `git show TAG:PATH`; a plain directory holding a checkout is
accepted as DIR@LABEL, LABEL then naming in the headers what the directory holds. Only the
projects given are rewritten. docs/upgrading-pins.md says when and how to run this. Needs git and
python3 with PyYAML (Debian: python3-yaml).

Output format (one file per reference): `#` header lines with the origin (repository, tag, paths),
then one key path per line. Path segments are joined by `.`; `[]` is an element of a list, `*`
any map key, and a path ending in `.**` accepts anything below it (a value upstream types as free
form, such as a map of labels). Every prefix of a listed path is valid too.
"""

import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "upstream")

# The stack's components whose configuration fields are extracted (kind, type, module directory
# in its repository). The contrib distribution's full component list is extracted too, so that
# a component the release lacks is caught.
CORE_COMPONENTS = [
    ("receivers", "receiver/otlpreceiver"),
    ("processors", "processor/batchprocessor"),
    ("processors", "processor/memorylimiterprocessor"),
    ("exporters", "exporter/otlpexporter"),
    ("exporters", "exporter/otlphttpexporter"),
]
CONTRIB_COMPONENTS = [
    ("extensions", "extension/healthcheckextension"),
    ("extensions", "extension/storage/filestorage"),
]
CORE_MODULE = "go.opentelemetry.io/collector/"
CONTRIB_MODULE = "github.com/open-telemetry/opentelemetry-collector-contrib/"
# Embedded core settings in Go configs, by the schema that describes them.
SQUASH_REFS = {
    "confighttp.ServerConfig": f"{CORE_MODULE}config/confighttp.server_config",
    "configgrpc.ServerConfig": f"{CORE_MODULE}config/configgrpc.server_config",
}


class Source:
    """One upstream repository at one tag (or a plain checkout directory)."""

    def __init__(self, repo, spec):
        self.repo = repo
        self.path, _, self.tag = spec.rpartition("@")
        if not self.path or not self.tag:
            sys.exit(f"refresh-upstream-refs: {spec!r}: expected DIR@TAG")
        self.is_git = self._git_ok()
        self.read_paths = []

    def _git_ok(self):
        try:
            subprocess.run(
                ["git", "-C", self.path, "rev-parse", "--verify", "-q", self.tag + "^{commit}"],
                check=True, capture_output=True)
            return True
        except subprocess.CalledProcessError:
            return False

    def read(self, path, required=True):
        if self.is_git:
            r = subprocess.run(["git", "-C", self.path, "show", f"{self.tag}:{path}"], capture_output=True)
            text = r.stdout.decode() if r.returncode == 0 else None
        else:
            full = os.path.join(self.path, path)
            text = open(full).read() if os.path.isfile(full) else None
        if text is None:
            if required:
                sys.exit(f"refresh-upstream-refs: {self.repo} {self.tag}: {path} not found")
            return None
        self.read_paths.append(path)
        return text

    def list(self, directory):
        """The names of the files in one directory."""
        if self.is_git:
            return subprocess.run(["git", "-C", self.path, "ls-tree", "--name-only", f"{self.tag}:{directory}"],
                                  capture_output=True, text=True, check=True).stdout.split()
        return sorted(os.listdir(os.path.join(self.path, directory)))

    def header(self, what):
        lines = [f"# {what}",
                 "# Extracted by scripts/refresh-upstream-refs.py; regenerate, never edit by hand.",
                 f"# origin: {self.repo} {self.tag}" + ("" if self.is_git else " (checkout directory)")]
        lines += [f"# path: {p}" for p in sorted(set(self.read_paths))]
        return lines


def write(rel, header, paths):
    out = os.path.join(ROOT, rel)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(header + sorted(set(paths))) + "\n")
    print(f"wrote {os.path.relpath(out)} ({len(set(paths))} paths)")


# --- YAML defaults (Tempo's manifest) ----------------------------------------------------------

def yaml_paths(value, prefix, out):
    """Key paths of a default configuration: an empty map or null is free form below."""
    if isinstance(value, dict):
        if not value and prefix:
            out.append(prefix + ".**")
        for k, v in value.items():
            yaml_paths(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list):
        out.append(prefix)
        for item in value:
            if isinstance(item, dict):
                yaml_paths(item, prefix + ".[]", out)
    elif value is None:
        out.append(prefix + ".**")
    else:
        out.append(prefix)


# --- Bracket-annotated reference docs (Loki's and Prometheus's configuration pages) -----------

FIELD = re.compile(r"^\[?\s*([A-Za-z_][\w.-]*|<[\w]+>)\s*:\s*(.*?)\s*\]?$")
LIST_ITEM = re.compile(r"^\[?\s*-\s*<([\w]+)>")


def doc_blocks(text, heading, every=False):
    """Code blocks of a reference page keyed by the section heading they follow: the first one,
    or with `every` all of them (a section showing two variants of one block)."""
    blocks, name, inside, lines = {}, "__before__", False, []
    for line in text.splitlines():
        m = heading.match(line)
        if m and not inside:
            name = m.group(1)
            continue
        if line.startswith("```"):
            if inside:
                if name not in blocks:
                    blocks[name] = lines
                elif every and any("<" in line for line in lines):
                    blocks[name] = blocks[name] + lines
                inside, lines = False, []
            else:
                inside = True
            continue
        if inside:
            lines.append(line)
    return blocks


def block_fields(lines):
    """(indent, key, type) for each field line of a block; comments dropped."""
    fields = []
    for raw in lines:
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip())
        item = LIST_ITEM.match(stripped)
        if item:
            fields.append((indent, "[]", "<" + item.group(1) + ">"))
            continue
        m = FIELD.match(stripped)
        if m:
            fields.append((indent, m.group(1), m.group(2)))
    return fields


def ref_name(typ, blocks):
    """The block a type names: `<name>`, `<list of names>` or `[ - <name> ... ]`."""
    m = re.search(r"<(?:list of )?([\w]+?)>", typ)
    if not m:
        return None
    name = m.group(1)
    for cand in (name, name.rstrip("s"), name[:-1] if name.endswith("s") else name):
        if cand in blocks:
            return cand
    return None


def expand(block, blocks, prefix, out, stack):
    fields = block_fields(blocks[block])
    parents = []  # (indent, path)
    for indent, key, typ in fields:
        while parents and parents[-1][0] >= indent:
            parents.pop()
        base = parents[-1][1] if parents else prefix
        seg = "*" if key.startswith("<") else key
        path = f"{base}.{seg}" if base else seg
        target = ref_name(typ, blocks)
        is_list = "list of" in typ or key == "[]" or typ.startswith("[") or typ.startswith("- ")
        if target and target not in stack and len(stack) < 12:
            child = path + ".[]" if is_list and key != "[]" else path
            out.append(child)
            expand(target, blocks, child, out, stack + [target])
        elif typ == "" or typ.endswith(":"):
            out.append(path)
            parents.append((indent, path))
        elif "map of" in typ or key.startswith("<"):
            out.append(path + ".**")
        else:
            out.append(path)


# --- Collector config schemas (generated from each component's mapstructure fields) ----------

class SchemaResolver:
    def __init__(self, sources):
        self.sources = sources  # module prefix -> (Source, path prefix in the repo)
        self.cache = {}

    def load(self, module_dir):
        if module_dir not in self.cache:
            for prefix, (src, root) in self.sources.items():
                if module_dir.startswith(prefix):
                    rel = root + module_dir[len(prefix):]
                    text = src.read(rel.strip("/") + "/config.schema.yaml", required=False)
                    self.cache[module_dir] = yaml.safe_load(text) if text else None
                    break
            else:
                self.cache[module_dir] = None
        return self.cache[module_dir]

    def resolve(self, ref, here):
        """A `$ref` from the schema of module `here` to (module, schema node)."""
        if "." in ref.rsplit("/", 1)[-1]:
            target, _, name = ref.rpartition(".")
        else:
            target, name = "", ref
        if target == "":
            module = here
        elif target.startswith("./"):
            module = os.path.normpath(os.path.join(here, target[2:]))
        elif target.startswith("/"):
            module = self.root_of(here) + target[1:]
        else:
            module = target
        schema = self.load(module)
        if schema is None:
            return module, None
        return module, (schema.get("$defs") or {}).get(name)

    def root_of(self, module):
        for prefix in self.sources:
            if module.startswith(prefix):
                return prefix
        return ""

    def paths(self, node, module, prefix, out, depth=0):
        if node is None or depth > 20:
            out.append(prefix + ".**")
            return
        if "$ref" in node:
            m, target = self.resolve(node["$ref"], module)
            self.paths(target, m, prefix, out, depth + 1)
        for part in node.get("allOf", []):
            self.paths(part, module, prefix, out, depth + 1)
        props = node.get("properties") or {}
        for key, sub in props.items():
            path = f"{prefix}.{key}"
            out.append(path)
            kind = sub.get("type")
            if "$ref" in sub or sub.get("allOf") or sub.get("properties"):
                self.paths(sub, module, path, out, depth + 1)
            elif kind == "array" and isinstance(sub.get("items"), dict) and (
                    "$ref" in sub["items"] or sub["items"].get("properties")):
                self.paths(sub["items"], module, path + ".[]", out, depth + 1)
            elif kind == "object" and "additionalProperties" in sub:
                out.append(path + ".**")


GO_STRUCT = re.compile(r"^type (\w+) struct \{$")
GO_FIELD = re.compile(r"^\s*(?:\w+\s+)?(\*?[\w.\[\]]+)\s+`mapstructure:\"([^\",]*)")
GO_IMPORT = re.compile(r'^\s*(?:import\s+)?(?:(\w+)\s+)?"([\w./-]+)"$')


class GoStructs:
    """The `mapstructure` fields of Go config structs, for components without a usable generated
    schema: each package's `config.go`, following the embedded or nested structs it takes from
    other packages of the same repository (read from their `config.go` too)."""

    def __init__(self, src, roots, resolver):
        self.src = src
        self.roots = roots  # Go module prefix -> its directory in the repository
        self.resolver = resolver
        self.structs = {}  # "package.Type" -> [(type, tag)]
        self.packages = {}  # directory -> (package name, {import name: directory})

    def load(self, directory):
        if directory in self.packages:
            return self.packages[directory][0]
        text = self.src.read(directory + "/config.go", required=False)
        if text is None:
            self.packages[directory] = (None, {})
            return None
        package = re.search(r"^package (\w+)", text, re.M).group(1)
        imports, current = {}, None
        for line in text.splitlines():
            imp = GO_IMPORT.match(line)
            if imp:
                for module, root in self.roots.items():
                    if imp.group(2).startswith(module):
                        path = root + imp.group(2)[len(module):]
                        imports[imp.group(1) or path.rsplit("/", 1)[-1]] = path
            m = GO_STRUCT.match(line)
            if m:
                current = self.structs.setdefault(f"{package}.{m.group(1)}", [])
                continue
            if current is not None:
                if line == "}":
                    current = None
                    continue
                f = GO_FIELD.match(line)
                if f:
                    typ = re.sub(r"^configoptional\.Optional\[(.*)\]$", r"\1", f.group(1).lstrip("*"))
                    current.append((typ, f.group(2)))
        self.packages[directory] = (package, imports)
        return package

    def resolve(self, typ, directory):
        """The qualified name of a struct type used in `directory`'s package, if it was read."""
        package, imports = self.packages[directory]
        if "." not in typ:
            return f"{package}.{typ}", directory
        alias, name = typ.split(".", 1)
        if alias in imports:
            other = self.load(imports[alias])
            if other:
                return f"{other}.{name}", imports[alias]
        return None, None

    def paths(self, directory, struct, prefix, out, seen=()):
        package = self.load(directory)
        if package is None:
            out.append(prefix + ".**")
            return
        for typ, tag in self.structs.get(f"{package}.{struct}", []):
            if tag == "-":
                continue
            path = prefix if tag == "" else f"{prefix}.{tag}"
            if tag:
                out.append(path)
            if typ in SQUASH_REFS:
                module, node = self.resolver.resolve(SQUASH_REFS[typ], "")
                self.resolver.paths(node, module, path, out)
                continue
            element = typ.removeprefix("[]")
            name, where = self.resolve(element, directory)
            if name in self.structs and name not in seen:
                inner = path + ".[]" if element != typ else path
                self.paths(where, name.split(".", 1)[1], inner, out, seen + (name,))
            elif tag == "" or typ.startswith("map[") or ("." in typ and not typ.startswith("time.")):
                out.append(path + ".**")


# --- JSON schemas (Grafana's dashboard and panel kinds) ----------------------------------------

def json_schema_paths(node, defs, prefix, out, seen=()):
    """Key paths of a draft-07 JSON schema node: properties, `$ref`s into `definitions`, the
    members of unions, list items; an object open to any key (`additionalProperties` other than
    false) is free form below."""
    if not isinstance(node, dict):
        return
    ref = node.get("$ref", "")
    if ref.startswith("#/definitions/"):
        name = ref.rsplit("/", 1)[1]
        if name not in seen:
            json_schema_paths(defs.get(name), defs, prefix, out, seen + (name,))
    for key in ("allOf", "anyOf", "oneOf"):
        for part in node.get(key, []):
            json_schema_paths(part, defs, prefix, out, seen)
    for key, sub in (node.get("properties") or {}).items():
        path = f"{prefix}.{key}"
        out.append(path)
        json_schema_paths(sub, defs, path, out, seen)
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        json_schema_paths(node["items"], defs, prefix + ".[]", out, seen)
    extra = node.get("additionalProperties")
    if node.get("type") == "object" and extra not in (None, False) and not node.get("properties"):
        out.append(prefix + ".**")


# --- projects ----------------------------------------------------------------------------------

def tempo(src):
    text = src.read("docs/sources/tempo/configuration/manifest.md")
    body = text.split("```yaml", 1)[1].split("```", 1)[0]
    out = []
    yaml_paths(yaml.safe_load(body), "", out)
    # The manifest is the default config marshalled, so a top-level `omitempty` field whose
    # default is zero (stream_over_http_enabled, auth_enabled, ...) is missing from it: the
    # root struct's yaml tags list them.
    root = src.read("cmd/tempo/app/config.go")
    struct = root.split("type Config struct {", 1)[1].split("\n}", 1)[0]
    tops = {p.split(".", 1)[0] for p in out}
    out += [k for k in re.findall(r'yaml:"([\w]+)', struct) if k not in tops]
    # `distributor.receivers` is empty by default: its receivers are the OpenTelemetry
    # Collector factories Tempo's distributor registers, configured by their own schemas.
    shim = src.read("modules/distributor/receiver/shim.go")
    names = sorted(set(re.findall(r"\b(\w+)receiver\.NewFactory\(\)", shim)))
    out = [p for p in out if p != "distributor.receivers.**"]
    resolver = SchemaResolver({CORE_MODULE: (src, "vendor/" + CORE_MODULE)})
    for name in names:
        module = f"{CORE_MODULE}receiver/{name}receiver"
        schema = resolver.load(module)
        prefix = f"distributor.receivers.{name}"
        out.append(prefix)
        if schema is not None:
            resolver.paths(schema, module, prefix, out)
        else:
            structs = GoStructs(src, {CORE_MODULE: "vendor/" + CORE_MODULE}, resolver)
            structs.paths(f"vendor/{module}", "Config", prefix, out)
    write("tempo/config-keys.txt", src.header("Every key path of Tempo's configuration"), out)


def loki(src):
    text = src.read("docs/sources/shared/configuration.md")
    blocks = doc_blocks(text, re.compile(r"^### (?:Supported contents.*|([\w]+))$"))
    blocks["__root__"] = blocks.pop(None)
    out = []
    expand("__root__", blocks, "", out, ["__root__"])
    write("loki/config-keys.txt", src.header("Every key path of Loki's configuration"), out)


def prometheus(src):
    text = src.read("docs/configuration/configuration.md")
    blocks = {"__root__" if k is None else k: v for k, v in doc_blocks(
        text, re.compile(r"^(?:## Configuration file|### `<([\w]+)>`)$")).items()}
    out = []
    expand("__root__", blocks, "", out, ["__root__"])
    write("prometheus/config-keys.txt", src.header("Every key path of prometheus.yml"), out)

    rules = src.read("docs/configuration/recording_rules.md")
    rblocks = {"__root__" if k is None else k: v for k, v in doc_blocks(
        rules, re.compile(r"^(?:## Recording rules|### `<([\w]+)>`)$"), every=True).items()}
    rout = []
    expand("__root__", rblocks, "", rout, ["__root__"])
    write("prometheus/rule-keys.txt", src.header("Every key path of a Prometheus rule file"), rout)

    flags_doc = src.read("docs/command-line/prometheus.md")
    flags = re.findall(r"<code class=\"text-nowrap\">(--[\w.-]+)</code>", flags_doc)
    m = re.search(r"Valid options: ([\w, -]+)\.", flags_doc)
    features = [f"--enable-feature={f.strip()}" for f in m.group(1).split(",")] if m else []
    write("prometheus/flags.txt", src.header("Every command-line flag and feature of prometheus"),
          flags + features)


def collector(core, releases, contrib):
    manifest = yaml.safe_load(releases.read("distributions/otelcol-contrib/manifest.yaml"))
    components, deprecated = [], []
    for kind in ("receivers", "processors", "exporters", "extensions", "connectors"):
        for entry in manifest.get(kind) or []:
            module = entry["gomod"].split()[0]
            src, prefix = (core, CORE_MODULE) if module.startswith(CORE_MODULE) else (contrib, CONTRIB_MODULE)
            meta = src.read(module[len(prefix):] + "/metadata.yaml", required=False) if src else None
            meta = yaml.safe_load(meta) if meta else {}
            if meta.get("type"):
                components.append(f"{kind}.{meta['type']}")
            else:
                # In the distribution, but its type was not read (no metadata.yaml given).
                components.append(f"{kind}.?{module}")
            if meta.get("deprecated_type"):
                deprecated.append(f"{kind}.{meta['deprecated_type']} {kind}.{meta['type']}")
    header = releases.header("The components of the otelcol-contrib distribution, as kind.type "
                             "(kind.?MODULE: in the distribution, type not extracted)")
    if core:
        header += [f"# types from: {core.repo} {core.tag}"]
    if contrib:
        header += [f"# types from: {contrib.repo} {contrib.tag}"]
    write("collector/components.txt", header, components)
    write("collector/deprecated-types.txt",
          header[:1] + ["# Deprecated aliases still accepted by this release: `alias current`."] + header[1:],
          deprecated)

    sources = {CORE_MODULE: (core, "")}
    if contrib:
        sources[CONTRIB_MODULE] = (contrib, "")
    resolver = SchemaResolver(sources)
    out = []
    for kind, rel in CORE_COMPONENTS + (CONTRIB_COMPONENTS if contrib else []):
        src = core if (kind, rel) in CORE_COMPONENTS else contrib
        typ = yaml.safe_load(src.read(rel + "/metadata.yaml"))["type"]
        prefix = f"{kind}.{typ}"
        out.append(prefix)
        if src is core:
            resolver.paths(resolver.load(CORE_MODULE + rel), CORE_MODULE + rel, prefix, out)
        else:
            # A contrib component's generated schema may only point at a shared package's (which
            # a partial checkout lacks): its `mapstructure` fields are the reference.
            src.read(rel + "/config.go")  # required here; GoStructs reads packages quietly
            GoStructs(contrib, {CONTRIB_MODULE: ""}, resolver).paths(rel, "Config", prefix, out)
    header = core.header("Configuration fields of the components the stack uses, as kind.type.field")
    if contrib:
        header += contrib.header("(contrib components)")[2:]
    write("collector/component-fields.txt", header, out)


OTTL_FUNCS = "pkg/ottl/ottlfuncs"


def ottl_functions(contrib):
    """The names of the OTTL functions (editors and converters) every OTTL component has: the
    factories `StandardFuncs` registers, each named by its `ottl.NewFactory` call."""
    registered = set(re.findall(r"\bNew(\w+)Factory\[K\]\(\)", contrib.read(f"{OTTL_FUNCS}/functions.go")))
    names = {}
    for name in contrib.list(OTTL_FUNCS):
        if not name.endswith(".go") or name.endswith("_test.go"):
            continue
        text = contrib.read(f"{OTTL_FUNCS}/{name}")
        consts = dict(re.findall(r'\b(\w+)\s*=\s*"(\w+)"', text))
        for factory, body in re.findall(r"func New(\w+)Factory\[K any\]\(\)[^{]*\{(.*?)\n\}", text, re.S):
            call = re.search(r'ottl\.NewFactory\(\s*(?:"(\w+)"|(\w+))', body)
            if call:
                names[factory] = call.group(1) or consts.get(call.group(2))
    missing = sorted(f for f in registered if not names.get(f))
    if missing:
        sys.exit(f"refresh-upstream-refs: {contrib.repo} {contrib.tag}: no function name found for "
                 f"{', '.join(missing)} in {OTTL_FUNCS}")
    # The header names the registry and the pattern rather than each of the ~100 function files.
    contrib.read_paths = [p for p in contrib.read_paths if p.startswith(OTTL_FUNCS + "/functions")] + [
        f"{OTTL_FUNCS}/*.go (ottl.NewFactory names)"]
    write("collector/ottl-functions.txt",
          contrib.header("The OTTL functions every OTTL component (transform, filter, routing, ...) has"),
          [names[f] for f in registered])


GO_YAML_FIELD = re.compile(r'^\s*\w+\s+(\S+)\s+`(?:json:"[^"]*"\s+)?yaml:"([^",]+)')
PROVISIONING = "pkg/services/provisioning"


def go_yaml_structs(text):
    """The `yaml` tagged fields of each struct in a Go file: {struct: [(type, key)]}."""
    structs, current = {}, None
    for line in text.splitlines():
        m = GO_STRUCT.match(line)
        if m:
            current = structs.setdefault(m.group(1), [])
        elif current is not None and line == "}":
            current = None
        elif current is not None and (f := GO_YAML_FIELD.match(line)):
            current.append((f.group(1), f.group(2)))
    return structs


def go_yaml_paths(structs, name, prefix, out):
    for typ, key in structs[name]:
        path = f"{prefix}.{key}"
        out.append(path)
        element = typ.lstrip("[]*")
        if element in structs:
            go_yaml_paths(structs, element, path + ".[]" if typ.startswith("[]") else path, out)
        elif "JSON" in typ or typ.startswith("map["):
            out.append(path + ".**")  # free-form: each data source plugin reads its own keys


def grafana_provisioning(src):
    """The keys of Grafana's provisioning files: a data sources file (`datasources.`) and a
    dashboard providers file (`dashboards.`), from the structs Grafana reads them into, and the
    options the file provider reads."""
    out = []
    datasources = go_yaml_structs(src.read(f"{PROVISIONING}/datasources/types.go"))
    go_yaml_paths(datasources, "configVersion", "datasources", out)
    go_yaml_paths(datasources, "configsV1", "datasources", out)
    dashboards = go_yaml_structs(src.read(f"{PROVISIONING}/dashboards/types.go"))
    go_yaml_paths(dashboards, "configVersion", "dashboards", out)
    go_yaml_paths(dashboards, "configV1", "dashboards", out)
    options = "dashboards.providers.[].options"
    reader = src.read(f"{PROVISIONING}/dashboards/file_reader.go")
    out = [p for p in out if p != options + ".**"]
    out += [f"{options}.{key}" for key in re.findall(r'cfg\.Options\["(\w+)"\]', reader)]
    write("grafana/provisioning-keys.txt",
          src.header("Keys of Grafana's data source and dashboard provider provisioning files"), out)


def grafana_line(src):
    """The Grafana release line a foundation-sdk commit was generated for: the kind registry
    version in `.cog/config.yaml` (main, the SDK's newest generation), else the line the README of
    a release branch (`v11.6.x+cog-v0.0.x`) names; `next` follows Grafana's main branch, no
    release, and is refused."""
    config = src.read(".cog/config.yaml", required=False)
    if config is not None:
        return yaml.safe_load(config)["parameters"]["kind_registry_version"]
    found = re.search(r"generated for Grafana `(v\d+\.\d+\.x)`", src.read("README.md"))
    if not found:
        sys.exit(f"refresh-upstream-refs: {src.repo} {src.tag}: neither .cog/config.yaml nor "
                 "README.md names a Grafana release line; pass a commit of main or of a "
                 "vMAJOR.MINOR.x+cog-* branch")
    return found.group(1)


def grafana_schemas(src, label):
    """The dashboard's keys (`dashboard.`, one panel's own keys under `panel.`, a field config
    under `field_config.`) and, for every panel plugin, its `options` and `fieldConfig.defaults.custom`
    keys under `panels.TYPE.`: a panel's options and custom field config are the plugin's, so the
    dashboard schema leaves them open."""
    listing = src.list("jsonschema")
    out = []
    dash = json.loads(src.read("jsonschema/dashboard.jsonschema.json"))["definitions"]
    json_schema_paths(dash["Dashboard"], dash, "dashboard", out)
    json_schema_paths(dash["Panel"], dash, "panel", out)
    json_schema_paths(dash["FieldConfig"], dash, "field_config", out)
    for name in listing:
        typ = name.removesuffix(".jsonschema.json")
        if typ == name or typ == "dashboard":
            continue
        defs = json.loads(src.read(f"jsonschema/{name}")).get("definitions", {})
        if "Options" not in defs:
            continue  # a data source's query, or a shared definitions file: not a panel
        out.append(f"panels.{typ}")
        json_schema_paths(defs["Options"], defs, f"panels.{typ}.options", out)
        if "FieldConfig" in defs:
            json_schema_paths(defs["FieldConfig"], defs, f"panels.{typ}.custom", out)
    header = src.header("Grafana dashboard keys, panel types and each panel's options and custom "
                        "field config")
    header.insert(3, f"# grafana release line: {label}")
    write("grafana/dashboard-keys.txt", header, out)


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    given = {}
    for arg in argv:
        name, _, spec = arg.partition("=")
        repos = {"tempo": "grafana/tempo", "loki": "grafana/loki", "prometheus": "prometheus/prometheus",
                 "collector": "open-telemetry/opentelemetry-collector",
                 "releases": "open-telemetry/opentelemetry-collector-releases",
                 "contrib": "open-telemetry/opentelemetry-collector-contrib",
                 "grafana-schemas": "grafana/grafana-foundation-sdk", "grafana": "grafana/grafana"}
        if name not in repos or not spec:
            sys.exit(f"refresh-upstream-refs: {arg!r}: expected one of {', '.join(repos)}=DIR@TAG")
        given[name] = Source(repos[name], spec)
    for name, fn in (("tempo", tempo), ("loki", loki), ("prometheus", prometheus)):
        if name in given:
            fn(given[name])
    if "grafana" in given:
        grafana_provisioning(given["grafana"])
    if "grafana-schemas" in given:
        src = given["grafana-schemas"]
        grafana_schemas(src, "grafana/grafana " + grafana_line(src))
    if "collector" in given or "releases" in given:
        if not ("collector" in given and "releases" in given):
            sys.exit("refresh-upstream-refs: collector needs both collector= and releases=")
        collector(given["collector"], given["releases"], given.get("contrib"))
    if "contrib" in given:
        ottl_functions(given["contrib"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
