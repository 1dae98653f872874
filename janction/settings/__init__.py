"""Settings, one module per concern, all driven by environment variables.

With no environment at all this is the *embedded default*: SQLite, the in-memory
channel layer and eager Celery. Setting DATABASE_URL and REDIS_URL switches to
*real mode* (PostgreSQL, Redis broker/results/channel layer). `.env.example`
documents every variable.
"""

from .api import *  # noqa: F403
from .async_ import *  # noqa: F403
from .auth import *  # noqa: F403
from .base import *  # noqa: F403
from .chain import *  # noqa: F403
from .contributions import *  # noqa: F403
from .database import *  # noqa: F403
from .janction import *  # noqa: F403
from .metrics import *  # noqa: F403
from .nodes import *  # noqa: F403
from .notifications import *  # noqa: F403
from .pricing import *  # noqa: F403
from .rentals import *  # noqa: F403
from .reputation import *  # noqa: F403

# Last: the beat schedule reads the periods the modules above define.
from .schedule import *  # noqa: F403
from .security import *  # noqa: F403
from .server import *  # noqa: F403
from .services import *  # noqa: F403
