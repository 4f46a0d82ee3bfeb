// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#include <support/process.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <utility>

extern char** environ;

namespace vigil::test {

namespace {

using clock_type = std::chrono::steady_clock;
using std::chrono::milliseconds;

void close_fd(int& fd) noexcept
{
    if (fd >= 0) {
        ::close(fd);
        fd = -1;
    }
}

milliseconds left_until(clock_type::time_point deadline)
{
    auto left = std::chrono::duration_cast<milliseconds>(deadline - clock_type::now());
    return std::max(left, milliseconds(0));
}

// RAII for the spawn attributes, so that every exit path destroys them.
struct file_actions {
    file_actions() { ::posix_spawn_file_actions_init(&fa); }
    ~file_actions() { ::posix_spawn_file_actions_destroy(&fa); }
    file_actions(const file_actions&) = delete;
    file_actions& operator=(const file_actions&) = delete;
    posix_spawn_file_actions_t fa;
};

struct spawn_attributes {
    spawn_attributes() { ::posix_spawnattr_init(&attr); }
    ~spawn_attributes() { ::posix_spawnattr_destroy(&attr); }
    spawn_attributes(const spawn_attributes&) = delete;
    spawn_attributes& operator=(const spawn_attributes&) = delete;
    posix_spawnattr_t attr;
};

}  // namespace

child_process::child_process(std::vector<std::string> argv, std::optional<std::vector<std::string>> env)
{
    if (argv.empty())
        throw std::invalid_argument("child_process: empty argv");
    int out[2] = {-1, -1};
    int err[2] = {-1, -1};
    if (::pipe2(out, O_CLOEXEC) != 0)
        throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    if (::pipe2(err, O_CLOEXEC) != 0) {
        int e = errno;
        close_fd(out[0]);
        close_fd(out[1]);
        throw std::runtime_error(std::string("pipe: ") + std::strerror(e));
    }

    file_actions actions;
    ::posix_spawn_file_actions_addopen(&actions.fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    ::posix_spawn_file_actions_adddup2(&actions.fa, out[1], STDOUT_FILENO);
    ::posix_spawn_file_actions_adddup2(&actions.fa, err[1], STDERR_FILENO);

    // The test binary may ignore SIGPIPE or block signals; the peer must start with the
    // defaults, or a SIGTERM meant to stop it could be lost.
    spawn_attributes attributes;
    sigset_t defaults;
    sigset_t none;
    ::sigemptyset(&defaults);
    ::sigaddset(&defaults, SIGPIPE);
    ::sigaddset(&defaults, SIGTERM);
    ::sigaddset(&defaults, SIGINT);
    ::sigemptyset(&none);
    ::posix_spawnattr_setsigdefault(&attributes.attr, &defaults);
    ::posix_spawnattr_setsigmask(&attributes.attr, &none);
    ::posix_spawnattr_setflags(&attributes.attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (auto& a : argv)
        args.push_back(a.data());
    args.push_back(nullptr);

    std::vector<char*> vars;
    if (env) {
        for (auto& v : *env)
            vars.push_back(v.data());
        vars.push_back(nullptr);
    }
    int rc = ::posix_spawn(&pid_, argv[0].c_str(), &actions.fa, &attributes.attr, args.data(),
                           env ? vars.data() : environ);
    close_fd(out[1]);
    close_fd(err[1]);
    if (rc != 0) {
        close_fd(out[0]);
        close_fd(err[0]);
        pid_ = -1;
        throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
    }
    out_ = out[0];
    err_ = err[0];
    ::fcntl(out_, F_SETFL, ::fcntl(out_, F_GETFL) | O_NONBLOCK);
    ::fcntl(err_, F_SETFL, ::fcntl(err_, F_GETFL) | O_NONBLOCK);
}

child_process::~child_process()
{
    try {
        if (pid_ > 0 && !status_)
            terminate();
    } catch (...) {
        // A destructor must not throw; the SIGKILL below still makes sure.
    }
    if (pid_ > 0 && !status_) {
        ::kill(pid_, SIGKILL);
        int status = 0;
        ::waitpid(pid_, &status, 0);
    }
    close_fd(out_);
    close_fd(err_);
}

// Reads whatever is available now from `fd` into `into`; closes `fd` at end of file.
// Returns whether anything was read.
bool child_process::read_some(int& fd, std::string& into)
{
    bool got = false;
    char chunk[8192];
    while (fd >= 0) {
        auto n = ::read(fd, chunk, sizeof chunk);
        if (n > 0) {
            into.append(chunk, static_cast<std::size_t>(n));
            got = true;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        close_fd(fd);  // end of file, or an error that will not go away
    }
    return got;
}

void child_process::take_lines()
{
    for (auto nl = pending_.find('\n'); nl != std::string::npos; nl = pending_.find('\n')) {
        std::string line = pending_.substr(0, nl);
        pending_.erase(0, nl + 1);
        if (line.empty())
            continue;
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object())
            bad_lines_.push_back(std::move(line));
        else
            events_.push_back(std::move(j));
    }
}

std::size_t child_process::pump(std::chrono::milliseconds timeout)
{
    const std::size_t before = events_.size();
    const auto deadline = clock_type::now() + timeout;
    bool got_any = false;
    while (out_ >= 0 || err_ >= 0) {
        // Wait (up to the deadline) only for the first bytes; after them take what is there.
        int wait_ms = got_any ? 0 : static_cast<int>(left_until(deadline).count());
        pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
        int ready = ::poll(fds, 2, wait_ms);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            break;
        if (fds[0].revents != 0 && read_some(out_, pending_))
            got_any = true;
        if (fds[1].revents != 0 && read_some(err_, err_text_))
            got_any = true;
        take_lines();
        // Nothing read means a pipe hung up and was closed: go on with the other one.
    }
    if (out_ < 0 && !pending_.empty()) {
        // The last line had no newline: the child died mid-line.
        pending_ += '\n';
        take_lines();
    }
    return events_.size() - before;
}

std::optional<nlohmann::json> child_process::next_event(std::chrono::milliseconds timeout)
{
    const auto deadline = clock_type::now() + timeout;
    while (cursor_ >= events_.size()) {
        if (out_ < 0)
            return std::nullopt;
        auto left = left_until(deadline);
        pump(left);
        if (cursor_ < events_.size())
            break;
        if (left.count() == 0)
            return std::nullopt;
    }
    return events_[cursor_++];
}

std::optional<nlohmann::json> child_process::wait_for(std::string_view name, std::chrono::milliseconds timeout)
{
    const auto deadline = clock_type::now() + timeout;
    for (;;) {
        auto e = next_event(left_until(deadline));
        if (!e)
            return std::nullopt;
        if (e->value("event", "") == name)
            return e;
    }
}

std::size_t child_process::count(std::string_view name)
{
    pump();
    return static_cast<std::size_t>(std::count_if(events_.begin(), events_.end(), [name](const nlohmann::json& e) {
        return e.value("event", "") == name;
    }));
}

const std::string& child_process::stderr_text()
{
    pump();
    return err_text_;
}

std::string child_process::transcript()
{
    pump();
    std::string text = "stdout:\n";
    for (const auto& e : events_) {
        text += e.dump();
        text += '\n';
    }
    for (const auto& l : bad_lines_) {
        text += l;
        text += '\n';
    }
    text += "stderr:\n";
    text += err_text_;
    return text;
}

void child_process::signal(int sig)
{
    if (pid_ > 0 && !status_)
        ::kill(pid_, sig);
}

bool child_process::reap(bool block)
{
    if (status_)
        return true;
    if (pid_ <= 0)
        return false;
    int status = 0;
    pid_t done;
    do {
        done = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
    } while (done < 0 && errno == EINTR);
    if (done != pid_)
        return false;
    if (WIFEXITED(status))
        status_ = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        status_ = 128 + WTERMSIG(status);
    else
        status_ = -1;
    return true;
}

bool child_process::running()
{
    return !reap(false);
}

std::optional<int> child_process::wait_exit(std::chrono::milliseconds timeout)
{
    const auto deadline = clock_type::now() + timeout;
    for (;;) {
        if (reap(false)) {
            pump();
            return status_;
        }
        auto left = left_until(deadline);
        if (left.count() == 0)
            return std::nullopt;
        auto step = std::min(left, milliseconds(10));
        if (out_ >= 0 || err_ >= 0)
            pump(step);
        else
            ::poll(nullptr, 0, static_cast<int>(step.count()));
    }
}

int child_process::terminate(std::chrono::milliseconds grace)
{
    if (!status_) {
        signal(SIGTERM);
        if (!wait_exit(grace)) {
            signal(SIGKILL);
            reap(true);
        }
    }
    pump();
    return status_.value_or(-1);
}

std::optional<std::string> peers_dir()
{
    const char* dir = std::getenv("VIGIL_PEERS_DIR");
    if (dir == nullptr || *dir == '\0')
        return std::nullopt;
    return std::string(dir);
}

std::optional<std::string> find_in_path(std::string_view name)
{
    const char* path = std::getenv("PATH");
    if (path == nullptr || name.empty())
        return std::nullopt;
    std::string_view rest = path;
    while (true) {
        auto colon = rest.find(':');
        // Built by appending: g++ 12 warns (-Wrestrict, a false positive) on assignments
        // and concatenations of short literals here.
        std::string candidate;
        auto dir = rest.substr(0, colon);
        if (dir.empty())
            candidate += '.';
        else
            candidate.append(dir);
        candidate += '/';
        candidate.append(name);
        struct stat st {};
        if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0)
            return candidate;
        if (colon == std::string_view::npos)
            return std::nullopt;
        rest.remove_prefix(colon + 1);
    }
}

std::optional<std::string> find_node()
{
    return find_in_path("node");
}

bool have_node_ws()
{
    auto dir = peers_dir();
    if (!dir)
        return false;
    struct stat st {};
    return ::stat((*dir + "/node_modules/ws/package.json").c_str(), &st) == 0;
}

bool python_has_module(const std::string& name)
{
    bool plain = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
    });
    if (!plain)
        return false;
    try {
        child_process py({system_python, "-c", "import " + name});
        auto status = py.wait_exit(milliseconds(10000));
        return status && *status == 0;
    } catch (const std::exception&) {
        return false;  // no interpreter at that path
    }
}

}  // namespace vigil::test
