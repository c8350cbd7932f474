"""Start the soundsift web page and HTTP API: `python app.py [soundsift serve flags]`."""

import sys

from soundsift.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
