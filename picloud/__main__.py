import sys

from picloud.cli import main

sys.exit(main())
