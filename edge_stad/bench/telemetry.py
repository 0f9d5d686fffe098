"""Power, load, clocks, temperatures and memory, sampled in a background thread while a benchmark streams.

Sources, each optional and imported only when opened; a missing one is reported as
``"unavailable: <reason>"``, never as a zero:

* ``jtop`` (jetson-stats, Jetson): board power (total and per rail), GPU/CPU load, temperatures,
  GPU/CPU clocks, nvpmodel mode and jetson_clocks;
* ``nvml`` (nvidia-ml-py, desktop NVIDIA GPUs): power, the energy counter, SM/memory clocks, utilisation,
  device memory, temperature;
* ``psutil`` (any machine): system CPU load, this process's CPU load and RSS.

Every reading is a flat dict in common units (W, %, MHz, °C, MiB) made by a pure function of what
the library returned (:func:`parse_jtop`, :func:`read_nvml`, :func:`read_psutil`), so the parsers are
tested on recorded readings without the hardware. Cumulative counters (:data:`COUNTERS`: energy, CPU
seconds) are read as they are and turned into energy and loads over each segment from their first and
last values, which short sampling intervals cannot distort. :class:`Sampler` reads a source every
``interval`` seconds between ``start()`` and ``stop()``; several start/stop segments (one per timed
stream) accumulate, and :func:`summarize` turns them into means, maxima, loads and energy.

jetson-stats layouts understood (both as ``jetson.stats`` and as the structured ``jetson.power``):

* 4.x and later: ``power = {"rail": {name: {"power": mW, "avg": mW, "volt": mV, "curr": mA, ...}},
  "tot": {"power": mW, "avg": mW, "name": "VDD_IN"}}``; ``stats`` has ``"Power TOT"`` and
  ``"Power <rail>"`` (mW), ``"GPU"`` and ``"CPU1"``... (% or ``"OFF"``), ``"Temp <sensor>"`` (°C; -256
  for a sensor that is off), ``"nvp model"``, ``"jetson_clocks"``; ``cpu = {"cpu": [{"online": bool,
  "freq": {"cur": kHz}}, ...]}``, ``gpu = {name: {"status": {"load": %}, "freq": {"cur": kHz}}}``.
* 3.x: ``power = (total, rails)`` with ``total = {"cur": mW, "avg": mW}`` and ``rails = {name: {"cur":
  mW, "avg": mW}}``; ``stats`` has ``"power cur"`` / ``"power avg"`` (mW); ``cpu = {"CPU1": {"frq":
  kHz, "val": %}, ...}``, ``gpu = {"frq": kHz, "val": %}``. Some 3.x releases summed every rail into
  the total, the board input included (jetson_stats issue #51), so a ``POM_5V_IN`` / ``VDD_IN`` rail,
  the board's input, is preferred as the total whenever it is listed.
"""
import os
import threading
import time

MB = float(1 << 20)
# cumulative counters: energy (mJ, NVML), this process's CPU seconds, all cores' busy and total seconds
COUNTERS = ("energy_mj", "process_cpu_s", "cpu_busy_s", "cpu_total_s")
TOTAL_RAILS = ("POM_5V_IN", "VDD_IN")   # rails measuring the whole board's input
OFF_TEMPERATURE = -100.0                # jtop reports a switched-off sensor as -256 °C


class TelemetryUnavailable(Exception):
    """A telemetry source that cannot be opened here; the message says why."""


def unavailable(reason):
    return f"unavailable: {reason}"


# -- parsers: pure functions of recorded readings ------------------------------------------------------

def _number(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _watts(milliwatts):
    value = _number(milliwatts)
    return None if value is None else value / 1e3


def _jtop_power(sample):
    """``(total W, {rail: W})`` from ``jetson.power`` (either layout), else from ``jetson.stats``."""
    power, stats = sample.get("power"), sample.get("stats") or {}
    if isinstance(power, (tuple, list)) and len(power) == 2:            # 3.x: (total, rails), "cur" in mW
        rails = {name: _watts(rail.get("cur")) for name, rail in (power[1] or {}).items()}
        total = _watts((power[0] or {}).get("cur"))
    elif isinstance(power, dict) and power:                               # 4.x: {"rail": ..., "tot": ...}
        rails = {name: _watts(rail.get("power")) for name, rail in (power.get("rail") or {}).items()}
        tot = power.get("tot") or {}
        total = _watts(tot.get("power"))
        if tot.get("name"):                                               # the input rail jtop moved into "tot"
            rails.setdefault(tot["name"], total)
    else:                                                                 # only the flat stats dict
        rails = {key[len("Power "):]: _watts(value) for key, value in stats.items()
                 if key.startswith("Power ") and key != "Power TOT"}
        total = next((w for w in (_watts(stats.get(k)) for k in ("Power TOT", "power cur")) if w is not None), None)
    rails = {name: w for name, w in rails.items() if w is not None}
    board = next((rails[name] for name in TOTAL_RAILS if name in rails), None)
    return (board if board is not None else total), rails


def parse_jtop(sample):
    """One jtop reading from ``{"stats": jetson.stats, "power": jetson.power, "cpu": jetson.cpu,
    "gpu": jetson.gpu}`` (any of them may be missing), either jetson-stats layout (module docstring)."""
    stats = sample.get("stats") or {}
    reading = {}
    total, rails = _jtop_power(sample)
    if total is not None:
        reading["power_w"] = total
    if rails:
        reading["rails_w"] = rails
    if _number(stats.get("GPU")) is not None:
        reading["gpu_load_pct"] = float(stats["GPU"])
    cores = [float(v) for k, v in stats.items() if k.startswith("CPU") and k[3:].isdigit() and _number(v) is not None]
    if cores:
        reading["cpu_load_pct"] = sum(cores) / len(cores)
    temps = {k[len("Temp "):]: float(v) for k, v in stats.items()
             if k.startswith("Temp ") and _number(v) is not None and v > OFF_TEMPERATURE}
    if temps:
        reading["temp_c"] = temps
    gpu, cpu = sample.get("gpu") or {}, sample.get("cpu") or {}
    if _number(gpu.get("frq")) is not None:                               # 3.x
        reading["gpu_clock_mhz"] = gpu["frq"] / 1e3
    else:                                                                 # 4.x: one entry per GPU
        clocks = [g["freq"]["cur"] for g in gpu.values() if isinstance(g, dict)
                  and _number((g.get("freq") or {}).get("cur")) is not None]
        if clocks:
            reading["gpu_clock_mhz"] = clocks[0] / 1e3
    if isinstance(cpu.get("cpu"), list):                                  # 4.x
        freqs = [c["freq"]["cur"] for c in cpu["cpu"] if c.get("online", True)
                 and _number((c.get("freq") or {}).get("cur")) is not None]
    else:                                                                 # 3.x: {"CPU1": {"frq": kHz}}
        freqs = [c["frq"] for c in cpu.values() if isinstance(c, dict) and _number(c.get("frq")) is not None]
    if freqs:
        reading["cpu_clock_mhz"] = sum(freqs) / len(freqs) / 1e3
    for key, name in (("nvp model", "nvpmodel"), ("jetson_clocks", "jetson_clocks")):
        if stats.get(key) is not None:
            reading[name] = str(stats[key])
    return reading


def read_nvml(nvml, handle):
    """One NVML reading of ``handle`` through the ``pynvml`` module ``nvml`` (nvidia-ml-py).

    Power in W (NVML: mW), the energy counter in mJ (since the driver loaded; Volta and later), clocks in
    MHz, utilisation in %, device memory used in MiB, temperature in °C. A query this GPU does not
    support (``NVMLError``) is left out of the reading.
    """
    reading = {}

    def query(key, fn, *args, convert=float):
        try:
            reading[key] = convert(fn(handle, *args))
        except nvml.NVMLError:
            pass

    query("power_w", nvml.nvmlDeviceGetPowerUsage, convert=lambda mw: mw / 1e3)
    query("energy_mj", nvml.nvmlDeviceGetTotalEnergyConsumption)
    query("gpu_clock_mhz", nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM)
    query("mem_clock_mhz", nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_MEM)
    query("gpu_load_pct", nvml.nvmlDeviceGetUtilizationRates, convert=lambda u: float(u.gpu))
    query("gpu_memory_mb", nvml.nvmlDeviceGetMemoryInfo, convert=lambda m: m.used / MB)
    query("temp_c", nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU, convert=lambda t: {"gpu": float(t)})
    return reading


def read_psutil(psutil, process):
    """This process's RSS (MiB) and CPU seconds, and all cores' busy and total CPU seconds (counters)."""
    cpu = psutil.cpu_times()
    total = sum(cpu) - getattr(cpu, "guest", 0.0) - getattr(cpu, "guest_nice", 0.0)  # guest time is in user
    times = process.cpu_times()
    return {"rss_mb": process.memory_info().rss / MB, "process_cpu_s": times.user + times.system,
            "cpu_busy_s": total - cpu.idle - getattr(cpu, "iowait", 0.0), "cpu_total_s": total}


# -- sources ---------------------------------------------------------------------------------------------

class JtopSource:
    """jetson-stats' client (the jtop service must run on the board)."""

    name = "jtop"

    def __init__(self):
        try:
            from jtop import jtop
        except ImportError:
            raise TelemetryUnavailable("jetson-stats is not installed (on the Jetson: sudo pip3 install "
                                       "jetson-stats, then log in again)") from None
        self.jetson = jtop()
        try:
            self.jetson.start()
        except Exception as e:  # jtop raises its own JtopException when the service is not running
            raise TelemetryUnavailable(f"the jtop service is not reachable ({e}); sudo systemctl restart "
                                       "jtop.service") from None

    def read(self):
        jetson = self.jetson
        return parse_jtop({"stats": jetson.stats, "power": jetson.power, "cpu": jetson.cpu, "gpu": jetson.gpu})

    def close(self):
        self.jetson.close()


class NvmlSource:
    """NVML on CUDA device ``index``."""

    name = "nvml"

    def __init__(self, index=0):
        try:
            import pynvml
        except ImportError:
            raise TelemetryUnavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from None
        try:
            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(int(index))
        except pynvml.NVMLError as e:
            raise TelemetryUnavailable(f"NVML cannot open GPU {index}: {e}") from None
        self.nvml = pynvml

    def read(self):
        return read_nvml(self.nvml, self.handle)

    def close(self):
        self.nvml.nvmlShutdown()


class PsutilSource:
    name = "psutil"

    def __init__(self):
        try:
            import psutil
        except ImportError:
            raise TelemetryUnavailable("psutil is not installed (pip install psutil)") from None
        self.psutil, self.process = psutil, psutil.Process()

    def read(self):
        return read_psutil(self.psutil, self.process)

    def close(self):
        pass


def is_jetson():
    if os.path.exists("/etc/nv_tegra_release"):
        return True
    try:
        with open("/proc/device-tree/model", "rb") as f:
            return b"jetson" in f.read().lower()
    except OSError:
        return False


def open_sources(device):
    """The telemetry sources for ``device`` (``"cpu"`` or ``"cuda:N"``): ``(sources, {name: why not})``.

    jtop on a Jetson, NVML for a desktop GPU, psutil everywhere.
    """
    if is_jetson():
        power = ("jtop", JtopSource)
    elif device.startswith("cuda"):
        power = ("nvml", lambda: NvmlSource(int(device.partition(":")[2] or 0)))
    else:
        power = None
    sources, missing = [], {}
    for name, opener in ([power] if power else []) + [("psutil", PsutilSource)]:
        try:
            sources.append(opener())
        except TelemetryUnavailable as e:
            missing[name] = unavailable(e)
    if power is None:
        missing["power"] = unavailable("no power sensor is read on a CPU-only machine (jtop on Jetson, NVML on "
                                       "NVIDIA GPUs)")
    elif power[0] in missing:
        missing["power"] = missing[power[0]]
    return sources, missing


# -- sampling --------------------------------------------------------------------------------------------

class Sampler:
    """Reads ``source`` right away, every ``interval`` s in a thread, and once more at ``stop()``.

    Use it as a context manager around each timed segment; segments accumulate in ``segments``
    (lists of ``(perf_counter seconds, reading)``). A source that fails mid-run stops sampling and
    its error is kept in ``error``.
    """

    def __init__(self, source, interval=0.1):
        self.source, self.interval = source, float(interval)
        self.segments, self.error = [], None
        self._thread = self._stop = None

    def _read(self, segment):
        if self.error is None:
            try:
                segment.append((time.perf_counter(), self.source.read()))
            except Exception as e:  # a driver hiccup must not kill the benchmark: record it and stop
                self.error = f"{type(e).__name__}: {e}"

    def _loop(self, segment):
        while not self._stop.wait(self.interval) and self.error is None:
            self._read(segment)

    def start(self):
        segment = []
        self.segments.append(segment)
        self._read(segment)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(segment,), name=f"telemetry-{self.source.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._read(self.segments[-1])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def summary(self):
        result = summarize(self.segments)
        if self.error:
            result["error"] = self.error
        return result


def _stats(values):
    return {"mean": sum(values) / len(values), "max": max(values)}


def summarize(segments):
    """Mean and max of every numeric field (and of every entry of a dict field), the values seen of text
    fields, and over the segments' time: energy (the NVML counter where there is one, else the power
    integrated with trapezoids), this process's CPU load (% of one core) and the system's (% of all)."""
    values, texts, totals, seconds = {}, {}, dict.fromkeys(COUNTERS, 0.0), 0.0
    energy_from = None
    for segment in segments:
        if not segment:
            continue
        seconds += segment[-1][0] - segment[0][0]
        for _, reading in segment:
            for key, value in reading.items():
                if key in COUNTERS:
                    continue
                if isinstance(value, dict):
                    for sub, v in value.items():
                        values.setdefault(key, {}).setdefault(sub, []).append(v)
                elif isinstance(value, str):
                    texts.setdefault(key, set()).add(value)
                else:
                    values.setdefault(key, []).append(value)
        first, last = segment[0][1], segment[-1][1]
        for key in COUNTERS:
            if key in first and key in last:
                totals[key] += last[key] - first[key]
        if "energy_mj" in first and "energy_mj" in last:
            energy_from = "energy counter"
        elif len(segment) > 1 and all("power_w" in r for _, r in segment):
            totals["energy_mj"] += 1e3 * sum((t1 - t0) * (r0["power_w"] + r1["power_w"]) / 2
                                             for (t0, r0), (t1, r1) in zip(segment, segment[1:]))
            energy_from = "integrated power"
    result = {"samples": sum(len(s) for s in segments), "seconds": seconds}
    for key, v in values.items():
        result[key] = {sub: _stats(x) for sub, x in v.items()} if isinstance(v, dict) else _stats(v)
    for key, seen in texts.items():
        result[key] = sorted(seen)[0] if len(seen) == 1 else sorted(seen)
    if energy_from is not None:
        result["energy_j"] = totals["energy_mj"] / 1e3
        result["energy_from"] = energy_from
    if seconds and any("process_cpu_s" in r for s in segments for _, r in s):
        result["process_cpu_pct"] = {"mean": 100 * totals["process_cpu_s"] / seconds}
    if totals["cpu_total_s"]:
        result["cpu_load_pct"] = {"mean": 100 * totals["cpu_busy_s"] / totals["cpu_total_s"]}
    return result
