// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// chat-counter URL NAME COUNT [INTERVAL_MS]: a chat member that counts. It sends COUNT lines
// "NAME#1" ... "NAME#COUNT", one every INTERVAL_MS (default 50), and reads every line of the
// room. A line carries its sender's name and number, so at the end (two seconds after its
// own last line was confirmed) it can say how many it received from each other member, and
// which numbers it missed. It prints that report on stdout and exits 0.
//
// Its own lines use confirmed delivery with resend: a line is done once the server that read
// it answered a ping sent after it, and a line the connection lost on the way goes out again
// on the next connection. So when a node of the cluster dies under it, nothing it sent is
// lost; what the room said while it was reconnecting, it did not hear, and the numbers show
// exactly what.

#include <vigil/supervisor.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <charconv>
#include <chrono>
#include <cstddef>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <string_view>

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

struct settings {
    std::string url;
    std::string name;
    unsigned count = 0;
    std::chrono::milliseconds interval{50};
};

/// Each sender's numbers heard so far.
using heard_map = std::map<std::string, std::set<unsigned>>;

/// "[user 3@ab12] bob#17" -> bob heard 17. Join and leave notices and other lines are not
/// numbered: ignored.
void count_line(std::string_view line, heard_map& heard)
{
    auto text_at = line.find("] ");
    auto hash = line.rfind('#');
    if (line.empty() || line.front() != '[' || text_at == std::string_view::npos || hash == std::string_view::npos ||
        hash < text_at)
        return;
    auto sender = line.substr(text_at + 2, hash - text_at - 2);
    unsigned n = 0;
    auto digits = line.substr(hash + 1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec == std::errc{} && end == digits.data() + digits.size())
        heard[std::string(sender)].insert(n);
}

/// "41-43, 77": the numbers of 1..count not in `got`.
std::string missing_ranges(const std::set<unsigned>& got, unsigned count)
{
    std::string out;
    for (unsigned i = 1; i <= count; ++i) {
        if (got.count(i))
            continue;
        unsigned j = i;
        while (j + 1 <= count && !got.count(j + 1))
            ++j;
        out += (out.empty() ? "" : ", ") + std::to_string(i) + (j > i ? "-" + std::to_string(j) : "");
        i = j;
    }
    return out;
}

asio::awaitable<void> talk(vigil::supervisor& chat, const settings& s, unsigned& confirmed, unsigned& failed)
{
    asio::steady_timer pace(co_await asio::this_coro::executor);
    for (unsigned i = 1; i <= s.count; ++i) {
        pace.expires_after(s.interval);
        co_await pace.async_wait(asio::use_awaitable);
        // Not awaited one by one: lines keep their pace while earlier ones await confirmation.
        asio::co_spawn(
            chat.get_executor(),
            [&chat, line = s.name + "#" + std::to_string(i), &confirmed, &failed]() -> asio::awaitable<void> {
                auto ec = co_await chat.send(line);
                ++(ec ? failed : confirmed);
                if (ec)
                    std::cerr << "chat-counter: " << line << " not delivered: " << vigil::error_name(ec) << '\n';
            },
            asio::detached);
    }
    while (confirmed + failed < s.count) {
        pace.expires_after(20ms);
        co_await pace.async_wait(asio::use_awaitable);
    }
    // The others' last lines are still on their way.
    pace.expires_after(2s);
    co_await pace.async_wait(asio::use_awaitable);
    chat.stop();
}

void report(const settings& s, const heard_map& heard, unsigned confirmed, unsigned failed, std::size_t reconnects)
{
    std::cout << s.name << ": sent " << s.count << ", delivered " << confirmed << ", failed " << failed
              << ", reconnected " << reconnects << " time(s)\n";
    for (const auto& [sender, got] : heard) {
        if (sender == s.name)
            continue;
        std::cout << s.name << ":   from " << sender << ": " << got.size() << " of " << s.count;
        if (got.size() < s.count)
            std::cout << " (missed #" << missing_ranges(got, s.count) << ")";
        std::cout << '\n';
    }
}

bool parse(int argc, char** argv, settings& s)
{
    if (argc < 4 || argc > 5)
        return false;
    s.url = argv[1];
    s.name = argv[2];
    std::string_view count = argv[3];
    if (std::from_chars(count.data(), count.data() + count.size(), s.count).ec != std::errc{} || s.count == 0)
        return false;
    if (argc == 5) {
        unsigned ms = 0;
        std::string_view text = argv[4];
        if (std::from_chars(text.data(), text.data() + text.size(), ms).ec != std::errc{})
            return false;
        s.interval = std::chrono::milliseconds(ms);
    }
    return !s.name.empty() && s.name.find('#') == std::string::npos;
}

}  // namespace

int main(int argc, char** argv)
{
    settings s;
    if (!parse(argc, argv, s)) {
        std::cerr << "usage: chat-counter URL NAME COUNT [INTERVAL_MS]   (NAME without '#')\n";
        return 64;
    }
    vigil::supervisor_config cfg;
    cfg.session.ping_interval = 2s;
    cfg.session.pong_timeout = 1s;
    cfg.delivery = vigil::delivery_guarantee::resend_unconfirmed;

    try {
        asio::io_context ioc;
        vigil::supervisor chat(ioc.get_executor(), s.url, cfg);
        heard_map heard;
        chat.session_event_handlers().on_message = [&heard](std::string_view line, vigil::message_type) {
            count_line(line, heard);
        };
        chat.events().on_retry = [&s](const vigil::retry_info& r) {
            std::cerr << "chat-counter: " << s.name << " lost its connection (" << vigil::error_name(r.last.reason)
                      << "); reconnecting\n";
        };
        unsigned confirmed = 0, failed = 0;
        asio::co_spawn(ioc, talk(chat, s, confirmed, failed), asio::detached);
        int status = 0;
        asio::co_spawn(ioc, chat.run(), [&](std::exception_ptr e, vigil::error_code ec) {
            if (e)
                std::rethrow_exception(e);
            if (ec) {
                std::cerr << "chat-counter: " << vigil::error_name(ec) << '\n';
                status = 1;
            }
        });
        ioc.run();
        report(s, heard, confirmed, failed, chat.counters().connects > 0 ? chat.counters().connects - 1 : 0);
        return status;
    } catch (const std::exception& e) {
        std::cerr << "chat-counter: " << e.what() << '\n';
        return 1;
    }
}
