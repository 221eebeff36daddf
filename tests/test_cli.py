"""`python -m osnet_zoo` runs in a real subprocess and reports the papers' figures."""
import subprocess
import sys


def test_summary_command():
    out = subprocess.run([sys.executable, '-m', 'osnet_zoo', '--batch-size', '2', '--height', '128', '--width', '64'],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith('osnet_')}
    assert len(rows) == 9
    assert rows['osnet_x1_0'][1] == '2.170' and rows['osnet_x1_0'][2] == '244.9'  # β=1 at 128x64
    assert rows['osnet_x0_25'][3] == '512-d'


def test_help():
    out = subprocess.run([sys.executable, '-m', 'osnet_zoo', '--help'], capture_output=True, text=True, check=True)
    assert '--batch-size' in out.stdout and 'usage: python -m osnet_zoo' in out.stdout
