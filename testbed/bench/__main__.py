import sys

from testbed.bench.orchestrate import main

sys.exit(main())
