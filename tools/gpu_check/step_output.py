"""What a gpu_check.sh step printed: the last JSON line of WORK/<step>.out (every bench command ends with one)."""
import json
import os


def last_json(work, name):
    """The step's last line starting with '{', parsed; None when the step wrote nothing usable (failed, timed out)."""
    try:
        with open(os.path.join(work, name + ".out"), errors="replace") as f:
            lines = [ln for ln in f if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None
