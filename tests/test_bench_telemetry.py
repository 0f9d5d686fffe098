"""Telemetry parsers on recorded-layout readings (jetson-stats 3.x and 4.x, NVML, psutil), summaries and the
background sampler. No Jetson, GPU or driver needed: the readings are written out in the layouts the
libraries return (jetson_stats' jtop.py/core/power.py, nvidia-ml-py's pynvml.py, psutil)."""
import datetime
import sys
import threading
import time
import types
from collections import namedtuple

import pytest

from edge_stad.bench import telemetry
from edge_stad.bench.telemetry import Sampler, parse_jtop, read_nvml, read_psutil, summarize

# jetson-stats 4.x on a Xavier NX (JetPack 5): jtop moves the board input rail VDD_IN into "tot".
JTOP4_XAVIER_NX = {
    "stats": {"time": datetime.datetime(2024, 5, 1, 12), "uptime": datetime.timedelta(hours=3),
              "CPU1": 35, "CPU2": 45, "CPU3": "OFF", "CPU4": "OFF", "CPU5": 20, "CPU6": 60, "RAM": 0.41, "SWAP": 0.0,
              "EMC": 23, "GPU": 61.5, "APE": "OFF", "NVENC": "OFF", "NVDEC": "OFF", "NVJPG": "OFF",
              "Fan pwmfan0": 34.5, "Temp AO": 38.5, "Temp AUX": 37.0, "Temp CPU": 41.0, "Temp GPU": 40.0,
              "Temp thermal": 39.6, "Temp PMIC": -256, "Power VDD_CPU_GPU_CV": 4100, "Power VDD_SOC": 1300,
              "Power TOT": 8200, "jetson_clocks": "ON", "nvp model": "MODE_20W_6CORE"},
    "power": {"rail": {"VDD_CPU_GPU_CV": {"online": True, "type": "I2C", "status": "ok", "volt": 5016, "curr": 817,
                                          "warn": 32760, "crit": 32760, "power": 4100, "avg": 4052},
                       "VDD_SOC": {"online": True, "type": "I2C", "status": "ok", "volt": 5016, "curr": 259,
                                   "warn": 32760, "crit": 32760, "power": 1300, "avg": 1290}},
              "tot": {"online": True, "type": "I2C", "status": "ok", "volt": 5016, "curr": 1634, "warn": 32760,
                      "crit": 32760, "power": 8200, "avg": 8003, "name": "VDD_IN"}},
    "cpu": {"total": {"user": 30.1, "nice": 0.0, "system": 5.2, "idle": 64.7},
            "cpu": [{"online": True, "governor": "schedutil", "freq": {"min": 115200, "max": 1907200, "cur": 1420800},
                     "info_freq": {"min": 115200, "max": 1907200, "cur": 1420800}, "idle_state": {},
                     "model": "ARMv8 Processor rev 0 (v8l)", "user": 30.0, "nice": 0.0, "system": 5.0, "idle": 65.0},
                    {"online": True, "governor": "schedutil", "freq": {"min": 115200, "max": 1907200, "cur": 1190400},
                     "info_freq": {}, "idle_state": {}, "model": "", "user": 40.0, "nice": 0.0, "system": 5.0,
                     "idle": 55.0},
                    {"online": False, "governor": "", "freq": {"min": 0, "max": 0, "cur": 0}, "info_freq": {},
                     "idle_state": {}, "model": ""}]},
    "gpu": {"gv11b": {"type": "integrated",
                      "status": {"railgate": False, "tpc_pg_mask": False, "3d_scaling": True, "load": 61.5},
                      "freq": {"governor": "nvhost_podgov", "cur": 1109250, "max": 1109250, "min": 114750,
                               "GPC": [1109250]},
                      "power_control": "auto"}},
}

# jetson-stats 4.x on an AGX Xavier: no input rail, so jtop sums the rails into "tot" (no "name").
JTOP4_AGX_XAVIER = {"power": {"rail": {"GPU": {"power": 3104, "avg": 3000}, "CPU": {"power": 1552, "avg": 1500},
                                       "SOC": {"power": 1164, "avg": 1100}, "CV": {"power": 0, "avg": 0},
                                       "VDDRQ": {"power": 388, "avg": 380}, "SYS5V": {"power": 1792, "avg": 1800}},
                              "tot": {"power": 8000, "avg": 7780}}}

# jetson-stats 3.x on a Nano/TX2 (tegrastats POM_* rails): ``power`` is (total, rails) in mW, and this
# total summed every rail, the input included (jetson_stats issue #51): the POM_5V_IN rail is the board.
JTOP3_NANO = {
    "stats": {"time": datetime.datetime(2021, 3, 2, 9), "uptime": datetime.timedelta(minutes=40),
              "jetson_clocks": "OFF", "nvp model": "MAXN", "CPU1": 20, "CPU2": "OFF", "CPU3": 40, "CPU4": 30,
              "GPU": 40, "RAM": 1830420, "EMC": 12, "SWAP": 0, "APE": 25, "NVENC": "OFF", "NVDEC": "OFF",
              "NVJPG": "OFF", "fan": 0.0, "Temp AO": 40.5, "Temp CPU": 33.0, "Temp GPU": 31.5, "Temp PLL": 31.0,
              "Temp thermal": 32.25, "power cur": 5200, "power avg": 5002},
    "power": ({"cur": 5200, "avg": 5002},
              {"POM_5V_IN": {"cur": 3600, "avg": 3480}, "POM_5V_GPU": {"cur": 800, "avg": 761},
               "POM_5V_CPU": {"cur": 800, "avg": 761}}),
    "cpu": {"CPU1": {"min_freq": 102000, "max_freq": 1479000, "frq": 1479000, "governor": "schedutil", "val": 20,
                     "model": "ARMv8 Processor rev 1 (v8l)"},
            "CPU2": {},
            "CPU3": {"min_freq": 102000, "max_freq": 1479000, "frq": 1326000, "governor": "schedutil", "val": 40,
                     "model": ""}},
    "gpu": {"min_freq": 76800, "max_freq": 921600, "frq": 921600, "val": 40},
}


def test_jtop_4x_layout():
    r = parse_jtop(JTOP4_XAVIER_NX)
    assert r["power_w"] == pytest.approx(8.2)
    assert r["rails_w"] == pytest.approx({"VDD_CPU_GPU_CV": 4.1, "VDD_SOC": 1.3, "VDD_IN": 8.2})
    assert r["gpu_load_pct"] == 61.5 and r["cpu_load_pct"] == pytest.approx((35 + 45 + 20 + 60) / 4)
    assert r["temp_c"] == {"AO": 38.5, "AUX": 37.0, "CPU": 41.0, "GPU": 40.0, "thermal": 39.6}  # PMIC -256: off
    assert r["gpu_clock_mhz"] == pytest.approx(1109.25)
    assert r["cpu_clock_mhz"] == pytest.approx((1420800 + 1190400) / 2 / 1e3)            # online cores only
    assert r["nvpmodel"] == "MODE_20W_6CORE" and r["jetson_clocks"] == "ON"


def test_jtop_4x_total_without_an_input_rail():
    r = parse_jtop(JTOP4_AGX_XAVIER)
    assert r["power_w"] == pytest.approx(8.0) and len(r["rails_w"]) == 6 and r["rails_w"]["GPU"] == 3.104


def test_jtop_3x_layout_prefers_the_board_input_rail():
    r = parse_jtop(JTOP3_NANO)
    assert r["power_w"] == pytest.approx(3.6)                       # not the 5.2 W sum of every rail
    assert r["rails_w"] == pytest.approx({"POM_5V_IN": 3.6, "POM_5V_GPU": 0.8, "POM_5V_CPU": 0.8})
    assert r["gpu_load_pct"] == 40 and r["cpu_load_pct"] == pytest.approx(30)
    assert r["gpu_clock_mhz"] == pytest.approx(921.6) and r["cpu_clock_mhz"] == pytest.approx(1402.5)
    assert r["temp_c"]["AO"] == 40.5 and r["nvpmodel"] == "MAXN" and r["jetson_clocks"] == "OFF"
    agx = parse_jtop({"power": ({"cur": 9000, "avg": 8800}, {"GPU": {"cur": 3000, "avg": 2900},
                                                            "CPU": {"cur": 2000, "avg": 2000}})})
    assert agx["power_w"] == pytest.approx(9.0)


def test_jtop_flat_stats_of_either_version():
    assert parse_jtop({"stats": JTOP4_XAVIER_NX["stats"]})["power_w"] == pytest.approx(8.2)
    assert parse_jtop({"stats": JTOP4_XAVIER_NX["stats"]})["rails_w"] == pytest.approx(
        {"VDD_CPU_GPU_CV": 4.1, "VDD_SOC": 1.3})
    assert parse_jtop({"stats": JTOP3_NANO["stats"]})["power_w"] == pytest.approx(5.2)
    assert parse_jtop({}) == {} and parse_jtop({"power": {}, "stats": {"GPU": "OFF"}}) == {}


class NVMLError(Exception):
    pass


def fake_pynvml(energy_mj, energy_supported=True):
    """A pynvml module answering with values recorded on an RTX A4000 (power in mW, energy in mJ)."""
    counter = iter(energy_mj)

    def energy(handle):
        if not energy_supported:
            raise NVMLError("Not Supported")
        return next(counter)

    return types.SimpleNamespace(
        NVMLError=NVMLError, NVML_CLOCK_SM=1, NVML_CLOCK_MEM=2, NVML_TEMPERATURE_GPU=0,
        nvmlDeviceGetPowerUsage=lambda h: 61234,
        nvmlDeviceGetTotalEnergyConsumption=energy,
        nvmlDeviceGetClockInfo=lambda h, clock: {1: 1755, 2: 7000}[clock],
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87, memory=45),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=16 << 30, free=12 << 30, used=3435973836),
        nvmlDeviceGetTemperature=lambda h, sensor: 63)


def test_nvml_reading():
    r = read_nvml(fake_pynvml([123456789]), handle=object())
    assert r.pop("temp_c") == {"gpu": 63.0}
    assert r == pytest.approx({"power_w": 61.234, "energy_mj": 123456789.0, "gpu_clock_mhz": 1755.0,
                               "mem_clock_mhz": 7000.0, "gpu_load_pct": 87.0, "gpu_memory_mb": 3276.8})
    assert "energy_mj" not in read_nvml(fake_pynvml([], energy_supported=False), handle=None)   # left out, not 0


def test_nvml_energy_comes_from_counter_deltas():
    nvml = fake_pynvml([1_000_000, 1_030_000, 1_061_000, 2_000_000, 2_045_000])
    readings = [read_nvml(nvml, None) for _ in range(5)]
    segments = [[(0.0, readings[0]), (0.5, readings[1]), (1.0, readings[2])], [(5.0, readings[3]), (5.75, readings[4])]]
    s = summarize(segments)
    assert s["energy_j"] == pytest.approx(61.0 + 45.0) and s["energy_from"] == "energy counter"
    assert s["seconds"] == pytest.approx(1.75) and s["samples"] == 5
    assert s["power_w"] == pytest.approx({"mean": 61.234, "max": 61.234}) and s["temp_c"]["gpu"]["max"] == 63


def test_energy_integrates_power_without_a_counter():
    segments = [[(0.0, {"power_w": 10.0}), (1.0, {"power_w": 20.0}), (2.0, {"power_w": 20.0})],
                [(9.0, {"power_w": 4.0}), (9.5, {"power_w": 4.0})]]
    s = summarize(segments)
    assert s["energy_j"] == pytest.approx(15 + 20 + 2) and s["energy_from"] == "integrated power"
    assert s["power_w"]["mean"] == pytest.approx(58 / 5) and s["power_w"]["max"] == 20
    assert "energy_j" not in summarize([[(0.0, {"rss_mb": 1.0})], []])       # no power: no energy, not 0


CpuTimes = namedtuple("scputimes", "user nice system idle iowait irq softirq steal guest guest_nice")


def fake_psutil(cpu_times, process_times, rss):
    system, proc, memory = iter(cpu_times), iter(process_times), iter(rss)
    process = types.SimpleNamespace(cpu_times=lambda: types.SimpleNamespace(**next(proc)),
                                    memory_info=lambda: types.SimpleNamespace(rss=next(memory)))
    return types.SimpleNamespace(cpu_times=lambda: CpuTimes(*next(system))), process


def test_psutil_reading_and_loads_from_counters():
    psutil, process = fake_psutil(
        [(100, 0, 20, 870, 10, 0, 0, 0, 5, 0), (110.5, 0, 22, 875.5, 10, 0, 0, 0, 5, 0)],
        [{"user": 3.0, "system": 1.0}, {"user": 4.5, "system": 1.2}], [512 << 20, 600 << 20])
    first, last = read_psutil(psutil, process), read_psutil(psutil, process)
    assert first == pytest.approx({"rss_mb": 512.0, "process_cpu_s": 4.0, "cpu_busy_s": 120.0, "cpu_total_s": 1000.0})
    s = summarize([[(10.0, first), (12.0, last)]])
    assert s["process_cpu_pct"]["mean"] == pytest.approx(100 * 1.7 / 2)             # 1.7 CPU-s in 2 s
    assert s["cpu_load_pct"]["mean"] == pytest.approx(100 * 12.5 / 18)   # busy / all, all cores (guest is in user)
    assert s["rss_mb"] == {"mean": 556.0, "max": 600.0}


def test_summary_of_text_and_dict_fields():
    segments = [[(0.0, parse_jtop(JTOP4_XAVIER_NX)), (1.0, parse_jtop(JTOP3_NANO))]]
    s = summarize(segments)
    assert s["nvpmodel"] == ["MAXN", "MODE_20W_6CORE"] and s["rails_w"]["POM_5V_IN"] == {"mean": 3.6, "max": 3.6}
    assert s["power_w"] == pytest.approx({"mean": 5.9, "max": 8.2})


class CountingSource:
    name = "counting"

    def __init__(self, fail_after=None):
        self.reads, self.fail_after = 0, fail_after

    def read(self):
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise OSError("sensor went away")
        return {"power_w": 5.0, "reads": float(self.reads), "thread": threading.current_thread().name}


def test_sampler_segments_in_a_background_thread():
    sampler = Sampler(CountingSource(), interval=0.01)
    for _ in range(2):
        with sampler:
            time.sleep(0.06)
    assert len(sampler.segments) == 2 and all(len(s) >= 3 for s in sampler.segments)
    threads = {r["thread"] for s in sampler.segments for _, r in s}
    assert "telemetry-counting" in threads and threading.current_thread().name in threads  # start/stop read here
    s = sampler.summary()
    assert s["samples"] == sum(map(len, sampler.segments)) and s["energy_j"] == pytest.approx(5 * s["seconds"])
    assert "error" not in s


def test_sampler_survives_a_failing_source():
    sampler = Sampler(CountingSource(fail_after=2), interval=0.005)
    with sampler:
        time.sleep(0.05)
    assert "sensor went away" in sampler.summary()["error"] and sampler.summary()["samples"] == 2


def test_missing_libraries_are_unavailable_not_zero(monkeypatch):
    for module in ("jtop", "pynvml", "psutil"):
        monkeypatch.setitem(sys.modules, module, None)   # import fails as if not installed
    with pytest.raises(telemetry.TelemetryUnavailable, match="jetson-stats is not installed"):
        telemetry.JtopSource()
    monkeypatch.setattr(telemetry, "is_jetson", lambda: False)
    sources, missing = telemetry.open_sources("cuda:0")
    assert sources == [] and missing["nvml"] == missing["power"]
    assert missing["power"].startswith("unavailable: nvidia-ml-py is not installed")
    assert missing["psutil"] == "unavailable: psutil is not installed (pip install psutil)"
    sources, missing = telemetry.open_sources("cpu")
    assert "CPU-only" in missing["power"] and missing["power"].startswith("unavailable: ")


def test_nvml_that_cannot_start_is_unavailable(monkeypatch):
    def fail():
        raise NVMLError("Driver Not Loaded")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(NVMLError=NVMLError, nvmlInit=fail))
    with pytest.raises(telemetry.TelemetryUnavailable, match="NVML cannot open GPU 0: Driver Not Loaded"):
        telemetry.NvmlSource(0)
