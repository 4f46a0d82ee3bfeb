// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0

#include "scrape.hpp"

#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <iterator>

namespace vigil::test {

std::string scrape(std::uint16_t port)
{
    boost::asio::ip::tcp::iostream http;
    http.expires_after(std::chrono::seconds(5));
    http.connect("127.0.0.1", std::to_string(port));
    if (!http)
        return {};
    http << "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" << std::flush;
    std::string all((std::istreambuf_iterator<char>(http)), std::istreambuf_iterator<char>());
    const auto body = all.find("\r\n\r\n");
    if (all.rfind("HTTP/1.", 0) != 0 || all.find(" 200 ") == std::string::npos || body == std::string::npos)
        return {};
    return all.substr(body + 4);
}

double sample(const std::string& text, const std::string& series)
{
    std::size_t at = 0;
    while ((at = text.find(series + ' ', at)) != std::string::npos) {
        if (at == 0 || text[at - 1] == '\n')
            return std::stod(text.substr(at + series.size() + 1));
        at += series.size();
    }
    return -1;
}

}  // namespace vigil::test
