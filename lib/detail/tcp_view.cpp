// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "tcp_view.hpp"

#if defined(__linux__)
#include <netinet/in.h>
#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#endif

namespace vigil::detail {

#if defined(__linux__)

tcp_view read_tcp_view(int fd) noexcept
{
    tcp_view v;
    ::tcp_info info{};
    socklen_t len = sizeof info;
    if (fd < 0 || ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 || info.tcpi_state != TCP_ESTABLISHED)
        return v;
    v.from = tcp_view::source::kernel;
    v.unacked = info.tcpi_unacked;
    v.retransmits = info.tcpi_retransmits;
    v.since_ack = std::chrono::milliseconds(info.tcpi_last_ack_recv);
    v.since_data = std::chrono::milliseconds(info.tcpi_last_data_recv);
    int queued = 0;
    if (::ioctl(fd, SIOCOUTQ, &queued) == 0 && queued > 0)
        v.queued = static_cast<std::uint32_t>(queued);
    return v;
}

std::size_t unread_bytes(int fd) noexcept
{
    int n = 0;
    if (fd < 0 || ::ioctl(fd, FIONREAD, &n) != 0 || n < 0)
        return 0;
    return static_cast<std::size_t>(n);
}

#else

tcp_view read_tcp_view(int) noexcept
{
    return {};
}

std::size_t unread_bytes(int) noexcept
{
    return 0;
}

#endif

}  // namespace vigil::detail
