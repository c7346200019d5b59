/* acl.c - placeholder; being written. */
#include "livequery/acl.h"
