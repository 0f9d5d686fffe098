"""Procedural spatio-temporal action detection data: stick figures whose classes differ by motion only.

  actors.py    skeleton, poses, forward kinematics, drawing, tight boxes
  motions.py   the action classes as pose trajectories (+ idle sway)
  scene.py     backgrounds, camera pan/shake, occluders, lighting, blur, noise
  presets.py   dataset sizes (tiny, small, bench)
  generate.py  videos and the ACT layout on disk: ``generate_dataset(out, preset, seed)``

Nothing is imported here, so that ``presets`` stays importable without OpenCV.
"""
