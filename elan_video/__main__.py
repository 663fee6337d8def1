"""``python -m elan_video``: the ``elan-video`` command, for environments where the script is not installed."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="elan-video")
