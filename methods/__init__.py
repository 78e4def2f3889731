"""Methods; each module registers its `Method` on import (see README, "Add a method")."""
