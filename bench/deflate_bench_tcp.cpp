// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// The bytes received by every TCP socket of this process, from TCP_INFO: the kernel's
// struct (linux/tcp.h) has tcpi_bytes_received, glibc's does not, and the two cannot be
// included together, so this file includes no Asio.

#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <dirent.h>

#include <cstdlib>

unsigned long long tcp_bytes_received()
{
    unsigned long long total = 0;
    DIR* d = ::opendir("/proc/self/fd");
    if (!d)
        return 0;
    while (auto* e = ::readdir(d)) {
        const int fd = std::atoi(e->d_name);
        if (fd <= 2)
            continue;
        tcp_info ti{};
        socklen_t len = sizeof ti;
        if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0)
            total += ti.tcpi_bytes_received;
    }
    ::closedir(d);
    return total;
}
