import sys

from cloud_worker.cli import main

sys.exit(main())
