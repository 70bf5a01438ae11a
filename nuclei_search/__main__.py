import sys

from nuclei_search.cli import main

sys.exit(main())
