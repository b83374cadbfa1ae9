/*
 * uring-compat.h — the one place that fills what Debian's liburing 2.3
 * lacks but this kernel (6.x) has. Nothing else open-codes io_uring ABI.
 */
#ifndef ANYPROXY_URING_COMPAT_H
#define ANYPROXY_URING_COMPAT_H

#include <liburing.h>

#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif

#endif
