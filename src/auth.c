/* auth.c - placeholder; being written. */
#include "livequery/auth.h"
