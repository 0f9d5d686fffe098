"""Benchmarking, behind ``edge-stad bench``.

  complexity   params and MACs per component (paper convention and true streaming cost; needs torch)
  latency      interleaved timing of callables; percentiles with warm-up exclusion
  streaming    timed streaming of a video through Runtime, backends interleaved round by round
  telemetry    jtop / NVML / psutil samplers in a background thread, pure parsers of their readings
  peak         the machine's GEMM MAC/s in a backend and precision
  machine      what ran it: machine and library versions
  harness      the run matrix (model x backbone x K x precision x backend) -> one record per engine
  report       CSV, markdown tables, PNG plots
  results      atomic markdown + JSON result files
  ort_profile  ONNX Runtime's time per operator type
"""
