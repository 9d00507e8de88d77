"""Device specs: the `DeviceSpec` type, its YAML data files and the unit-aware loader.

Owns `cost_models/hardware/devices/*.yaml` (one built-in device per file) and the rules for reading
them: every number may be written with a unit ("312 TFLOP/s", "80 GB", "2.039 TB/s", "400 W") or as
a plain SI number, and every number of a built-in device names its source in `sources`. The same
schema, a YAML file with a top-level `device:` mapping, is what `planner calibrate` writes, so a
measured profile loads exactly like a built-in device (`load_device_profile`).

The local CPU ("cpu") is detected on first use: cores from `os.cpu_count()` (SMT siblings removed
where sysfs says so), memory from `os.sysconf`, peak FLOP/s derived as cores x clock x FLOP per cycle.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from ir.errors import UserError

log = logging.getLogger(__name__)

DEVICES_DIR = Path(__file__).parent / "hardware" / "devices"
DTYPES = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")
_DTYPE_ALIASES = {
    "float64": "fp64", "double": "fp64", "float32": "fp32", "float": "fp32", "bfloat16": "bf16",
    "float16": "fp16", "half": "fp16", "float8": "fp8", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8",
}

# --- units -------------------------------------------------------------------------------------
_DEC = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BIN = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}


def _unit_table() -> dict[str, tuple[str, float]]:
    table: dict[str, tuple[str, float]] = {}
    for p, f in _DEC.items():
        table[f"{p}B"] = ("bytes", f)
        table[f"{p}B/s"] = ("bytes/s", f)
        for bits in (f"{p}b/s", f"{p}bit/s", f"{p}bps"):
            table[bits] = ("bytes/s", f / 8)
        for fl in (f"{p}FLOP/s", f"{p}FLOPS", f"{p}OP/s", f"{p}OPS"):
            table[fl] = ("flop/s", f)
    for p, f in _BIN.items():
        table[f"{p}B"] = ("bytes", f)
        table[f"{p}B/s"] = ("bytes/s", f)
    table.update({"s": ("s", 1.0), "ms": ("s", 1e-3), "us": ("s", 1e-6), "µs": ("s", 1e-6),
                  "ns": ("s", 1e-9), "W": ("W", 1.0), "kW": ("W", 1e3), "$/h": ("$/h", 1.0)})
    return table


_UNITS = _unit_table()
_QUANTITY = re.compile(r"^\s*([-+]?[0-9][0-9_]*(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*(\S*)\s*$")


def unit_kind(field_name: str) -> str:
    """The dimension a field holds, from its name's suffix.

    >>> unit_kind("memory_bandwidth_bytes_per_s"), unit_kind("latency_s"), unit_kind("tdp_w")
    ('bytes/s', 's', 'W')
    """
    for suffix, kind in (("_bytes_per_s", "bytes/s"), ("_bytes", "bytes"), ("_per_hour", "$/h"),
                         ("_s", "s"), ("_w", "W")):
        if field_name.endswith(suffix):
            return kind
    return "flop/s"


def parse_quantity(value: object, kind: str, where: str = "value") -> float:
    """A number in SI units from a plain number or a string with a unit of dimension `kind`.

    Raises `UserError` naming `where` when the text is not a quantity of that dimension.

    >>> parse_quantity("312 TFLOP/s", "flop/s"), parse_quantity("400 Gb/s", "bytes/s")
    (312000000000000.0, 50000000000.0)
    >>> parse_quantity("80 GiB", "bytes"), parse_quantity(2.6e-6, "s")
    (85899345920.0, 2.6e-06)
    """
    if isinstance(value, bool):
        raise UserError(f"{where}: expected a number in {kind}, got {value!r}")
    if isinstance(value, (int, float)):
        return _checked(float(value), where, value)
    match = _QUANTITY.match(str(value))
    unit = _UNITS.get(match.group(2)) if match and match.group(2) else (kind, 1.0) if match else None
    if unit is None or unit[0] != kind:
        raise UserError(f"{where}: cannot read {value!r} as {kind} (e.g. {_EXAMPLES[kind]!r})")
    number, factor = float(match.group(1).replace("_", "")), unit[1]
    return _checked(number * factor if factor >= 1 else number / round(1 / factor), where, value)  # 5 us -> 5e-06


def _checked(number: float, where: str, given: object) -> float:
    """Quantities in specs are finite and not negative (a zero rate or size is refused where it is used)."""
    if not math.isfinite(number) or number < 0:
        raise UserError(f"{where}: {given!r} is not a finite, non-negative quantity")
    return number


def require_positive(values: dict[str, float], where: str) -> None:
    """UserError naming the first of `values` (name -> number) that is not above zero.

    >>> require_positive({"memory_bytes": 0}, "lab.yaml")
    Traceback (most recent call last):
    ir.errors.UserError: lab.yaml: memory_bytes must be above zero, got 0
    """
    for name, number in values.items():
        if not number > 0:
            raise UserError(f"{where}: {name} must be above zero, got {number:g}")


_EXAMPLES = {"bytes": "80 GB", "bytes/s": "2 TB/s", "flop/s": "312 TFLOP/s", "s": "5 us", "W": "400 W",
             "$/h": "4.10"}


def load_yaml(path: str | os.PathLike) -> object:
    """Read a YAML file; a missing file or malformed YAML is a one-line `UserError` with file:line.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "bad.yaml"
    >>> _ = p.write_text("ok: 1\\nbad: [1, 2\\n")
    >>> try: load_yaml(p)
    ... except UserError as e: print(str(e)[str(e).index("bad.yaml"):][:29])
    bad.yaml:3: malformed YAML (w
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}; check the path") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise UserError(f"{path}{line}: malformed YAML ({what}); fix the file and retry") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: malformed YAML ({exc}); fix the file and retry") from None


# --- the spec ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator (or CPU) as the cost models see it; all numbers are SI.

    `peak_flops` maps a dtype ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", ...) to DENSE peak
    FLOP/s (OP/s for int8), without 2:4 sparsity; dtypes the device lacks are absent. `sources` maps a
    field name ("memory_bytes") or "peak_flops.<dtype>" (or "peak_flops" for all) to where it came from.
    Do not mutate the dicts.
    """

    name: str
    vendor: str
    kind: str  # "gpu" | "cpu"
    peak_flops: dict[str, float]
    memory_bytes: int
    memory_bandwidth_bytes_per_s: float
    aliases: tuple[str, ...] = ()
    l2_cache_bytes: int | None = None
    tdp_w: float | None = None
    idle_w: float | None = None
    price_per_hour: float | None = None
    sources: dict[str, str] = field(default_factory=dict)
    notes: str = ""
    efficiency: dict[str, float] | None = None  # fitted by `planner calibrate` (cost_models.efficiency)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.peak_flops.items())), self.memory_bytes))

    def peak_flops_for(self, dtype: str) -> float:
        """Dense peak FLOP/s for `dtype` (torch names work too); `UserError` if the device lacks it.

        >>> get_device("a100").peak_flops_for("bfloat16")
        312000000000000.0
        """
        key = _DTYPE_ALIASES.get(dtype.lower(), dtype.lower())
        if key not in self.peak_flops:
            have = ", ".join(self.peak_flops)
            raise UserError(f"{self.name} has no {dtype} peak; it supports {have}; pick one of those")
        return self.peak_flops[key]

    def source_of(self, field_name: str) -> str:
        """The source of a field ("memory_bytes", "peak_flops.bf16"); "" when none is recorded.

        >>> "datasheet" in get_device("h100").source_of("peak_flops.bf16").lower()
        True
        """
        if field_name in self.sources:
            return self.sources[field_name]
        return self.sources.get(field_name.split(".")[0], "") if "." in field_name else ""

    def numeric_fields(self) -> dict[str, float]:
        """Every number of the spec keyed like `sources` ("peak_flops.bf16", "tdp_w"); None left out.

        >>> sorted(get_device("L4").numeric_fields())[:3]
        ['l2_cache_bytes', 'memory_bandwidth_bytes_per_s', 'memory_bytes']
        """
        out = {f"peak_flops.{k}": v for k, v in self.peak_flops.items()}
        for name in _NUMERIC:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def split(self, parts: int) -> DeviceSpec:
        """This device shared by `parts` ranks: each gets 1/parts of FLOP/s, memory and bandwidth.

        >>> get_device("cpu").split(2).memory_bytes * 2 <= get_device("cpu").memory_bytes
        True
        """
        if parts == 1:
            return self
        note = f" (divided among {parts} ranks sharing the host)"
        return replace(
            self,
            peak_flops={k: v / parts for k, v in self.peak_flops.items()},
            memory_bytes=self.memory_bytes // parts,
            memory_bandwidth_bytes_per_s=self.memory_bandwidth_bytes_per_s / parts,
            sources={k: v + note if k.split(".")[0] in _SPLIT else v for k, v in self.sources.items()},
        )

    def to_dict(self) -> dict:
        """A JSON-able dict of every field (SI units), readable back by `device_from_mapping`.

        >>> get_device("A10G").to_dict()["memory_bytes"]
        24000000000
        """
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["aliases"] = list(self.aliases)
        out["peak_flops"] = dict(self.peak_flops)
        out["sources"] = dict(self.sources)
        return out


_SPLIT = ("peak_flops", "memory_bytes", "memory_bandwidth_bytes_per_s")
_NUMERIC = ("memory_bytes", "memory_bandwidth_bytes_per_s", "l2_cache_bytes", "tdp_w", "idle_w",
            "price_per_hour")
_INT_FIELDS = ("memory_bytes", "l2_cache_bytes")
_REQUIRED = ("name", "kind", "peak_flops", "memory_bytes", "memory_bandwidth_bytes_per_s")
_KNOWN_KEYS = {f.name for f in fields(DeviceSpec)} | {"detect"}


def device_from_mapping(data: object, origin: str, require_sources: bool = False) -> DeviceSpec:
    """Build a `DeviceSpec` from a YAML mapping; units are converted, `origin` names it in errors.

    Without `require_sources`, numbers with no source get "given in <origin>".

    >>> d = device_from_mapping({"name": "toy", "kind": "gpu", "peak_flops": {"bf16": "1 TFLOP/s"},
    ...     "memory_bytes": "1 GB", "memory_bandwidth_bytes_per_s": "100 GB/s"}, "example")
    >>> d.peak_flops["bf16"], d.source_of("memory_bytes")
    (1000000000000.0, 'given in example')
    """
    if not isinstance(data, Mapping):
        raise UserError(f"{origin}: a device must be a mapping of DeviceSpec fields, "
                        f"got {type(data).__name__}")
    missing = [k for k in _REQUIRED if k not in data]
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if missing or unknown:
        what = f"missing {', '.join(missing)}" if missing else f"unknown key(s) {', '.join(unknown)}"
        raise UserError(f"{origin}: device {data.get('name', '?')!r}: {what}; "
                        "see `planner hardware show h100` for the fields")
    if data["kind"] not in ("gpu", "cpu"):
        raise UserError(f"{origin}: device {data['name']!r}: kind must be gpu or cpu, got {data['kind']!r}")
    flops = data["peak_flops"]
    if not isinstance(flops, Mapping) or not flops:
        raise UserError(f"{origin}: device {data['name']!r}: peak_flops must map dtypes to FLOP/s")
    values: dict = {k: data[k] for k in data if k not in ("detect", *_NUMERIC, "peak_flops")}
    values["peak_flops"] = {
        str(k): parse_quantity(v, "flop/s", f"{origin}: peak_flops.{k}") for k, v in flops.items()}
    for name in _NUMERIC:
        if data.get(name) is not None:
            number = parse_quantity(data[name], unit_kind(name), f"{origin}: {name}")
            values[name] = int(number) if name in _INT_FIELDS else number
    require_positive({**{f"peak_flops.{k}": v for k, v in values["peak_flops"].items()},
                      "memory_bytes": values["memory_bytes"],
                      "memory_bandwidth_bytes_per_s": values["memory_bandwidth_bytes_per_s"]},
                     f"{origin}: device {data['name']!r}")
    values["name"] = str(data["name"])
    values["vendor"] = str(data.get("vendor", "unknown"))
    values["aliases"] = tuple(str(a) for a in data.get("aliases") or ())
    values["sources"] = {str(k): str(v) for k, v in (data.get("sources") or {}).items()}
    if data.get("efficiency") is not None:
        from cost_models.efficiency import efficiency_from_mapping

        values["efficiency"] = efficiency_from_mapping(data["efficiency"], origin).to_dict()
    spec = DeviceSpec(**values)
    unsourced = [k for k in spec.numeric_fields() if not spec.source_of(k)]
    if unsourced and require_sources:
        raise UserError(f"{origin}: device {spec.name!r}: no source for {', '.join(unsourced)}")
    if unsourced:
        spec = replace(spec, sources={**spec.sources, **{k: f"given in {origin}" for k in unsourced}})
    return spec


def load_device_profile(path: str | os.PathLike) -> DeviceSpec:
    """A device from a YAML file with a top-level `device:` mapping (as `planner calibrate` writes).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "gpu.yaml"
    >>> _ = p.write_text("device: {name: lab-gpu, kind: gpu, peak_flops: {fp16: 50 TFLOP/s},"
    ...                  " memory_bytes: 16 GB, memory_bandwidth_bytes_per_s: 900 GB/s}")
    >>> load_device_profile(p).name
    'lab-gpu'
    """
    data = load_yaml(path)
    if not isinstance(data, Mapping) or "device" not in data:
        raise UserError(f"{path}: a device profile needs a top-level 'device:' mapping")
    return device_from_mapping(data["device"], str(path))


# --- the local CPU -----------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _cpu_detected() -> dict:
    """Detected fields of the local CPU, with a source line each (no side effects beyond reads)."""
    logical = os.cpu_count() or 1
    siblings = _read("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").strip()
    smt = len(re.split(r"[,-]", siblings)) if siblings else 1
    cores = max(1, logical // smt)
    cpuinfo = _read("/proc/cpuinfo")
    max_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").strip()
    mhz = re.search(r"cpu MHz\s*:\s*([0-9.]+)", cpuinfo)
    clock_hz = float(max_khz) * 1e3 if max_khz else float(mhz.group(1)) * 1e6 if mhz else 2.5e9
    clock_src = "cpufreq max" if max_khz else "/proc/cpuinfo 'cpu MHz'" if mhz else "assumed 2.5 GHz"
    flags = set(re.search(r"flags\s*:(.*)", cpuinfo).group(1).split()) if "flags" in cpuinfo else set()
    wide_fma = ("fma" in flags and "avx2" in flags) or "avx512f" in flags
    per_cycle = 32 if wide_fma else 16 if "avx" in flags else 8
    peak = cores * clock_hz * per_cycle
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 8 * 2**30
    l2 = _read("/sys/devices/system/cpu/cpu0/cache/index2/size").strip()
    derivation = (f"derived: {cores} cores x {clock_hz / 1e9:.2f} GHz ({clock_src}) x {per_cycle} FP32 "
                  "FLOP/cycle (two 256-bit FMA pipes: AVX2+FMA or AVX-512 counted alike; parts with two "
                  "512-bit FMA ports reach 2x); bf16/fp16 assumed no faster than fp32; "
                  "`planner calibrate` measures the real number")
    out = {"peak_flops": {"fp32": peak, "bf16": peak, "fp16": peak}, "memory_bytes": memory,
           "sources": {"peak_flops": derivation, "memory_bytes": "os.sysconf(SC_PAGE_SIZE * SC_PHYS_PAGES)"},
           "notes": f"detected: {logical} logical CPUs, {cores} cores"}
    if l2.endswith("K") and l2[:-1].isdigit():
        out["l2_cache_bytes"] = int(l2[:-1]) * 1024
        out["sources"]["l2_cache_bytes"] = "sysfs cpu0/cache/index2/size (per core)"
    return out


# --- the database ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _database() -> tuple[dict[str, DeviceSpec], dict[str, str]]:
    """(canonical name -> spec, lower-case name or alias -> canonical name), loaded once."""
    devices: dict[str, DeviceSpec] = {}
    lookup: dict[str, str] = {}
    for path in sorted(DEVICES_DIR.glob("*.yaml")):
        data = load_yaml(path)
        entry = dict(data["device"])
        if entry.pop("detect", False):
            detected = _cpu_detected()
            entry["sources"] = {**entry.get("sources", {}), **detected.pop("sources")}
            entry.update(detected)
        spec = device_from_mapping(entry, path.name, require_sources=True)
        for key in (spec.name, *spec.aliases):
            if key.lower() in lookup:
                raise ValueError(f"{path.name}: name {key!r} already used by {lookup[key.lower()]}")
            lookup[key.lower()] = spec.name
        devices[spec.name] = spec
    return devices, lookup


def list_devices() -> tuple[DeviceSpec, ...]:
    """Every built-in device, sorted by name (the local CPU included as "cpu").

    >>> "H100-SXM" in [d.name for d in list_devices()]
    True
    """
    devices, _ = _database()
    return tuple(devices[name] for name in sorted(devices))


def device_names() -> tuple[str, ...]:
    """Canonical names of the built-in devices, sorted.

    >>> device_names()[0]
    'A100-PCIE-80GB'
    """
    return tuple(sorted(_database()[0]))


def find_device(name: str) -> DeviceSpec | None:
    """The built-in device called `name` (case-insensitive, aliases allowed), or None.

    >>> find_device("nope") is None, find_device("H100").name
    (True, 'H100-SXM')
    """
    devices, lookup = _database()
    canonical = lookup.get(name.strip().lower())
    return devices[canonical] if canonical else None


def get_device(name: str) -> DeviceSpec:
    """The built-in device called `name`; `UserError` listing the known names if there is none.

    >>> get_device("a100").name, get_device("h100-sxm").memory_bytes
    ('A100-SXM-80GB', 80000000000)
    """
    spec = find_device(name)
    if spec is None:
        raise UserError(f"unknown device {name!r}; known devices: {', '.join(device_names())} "
                        "(case-insensitive; aliases like h100, a100 work)")
    return spec

