// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
#pragma once

// The part of a test's nginx configuration every nginx the tests start shares.

#include <sstream>
#include <string>

namespace vigil::test {

/// From "daemon off;" to the inside of the http block: nginx in the foreground as one
/// process (the test owns its lifetime, and one SIGTERM ends all of it), every path in `dir`
/// (so neither root nor /var/log/nginx is needed), and the map that passes a WebSocket
/// upgrade on. The caller appends its upstreams and servers, then closes the http block.
inline std::string nginx_conf_head(const std::string& dir, unsigned worker_connections)
{
    std::ostringstream conf;
    conf << "daemon off;\n"
         << "master_process off;\n"
         << "worker_processes 1;\n"
         << "pid " << dir << "/nginx.pid;\n"
         << "error_log " << dir << "/error.log info;\n"
         << "events { worker_connections " << worker_connections << "; }\n"
         << "http {\n"
         << "    access_log " << dir << "/access.log;\n"
         << "    client_body_temp_path " << dir << "/tmp/body;\n"
         << "    proxy_temp_path " << dir << "/tmp/proxy;\n"
         << "    fastcgi_temp_path " << dir << "/tmp/fastcgi;\n"
         << "    uwsgi_temp_path " << dir << "/tmp/uwsgi;\n"
         << "    scgi_temp_path " << dir << "/tmp/scgi;\n"
         << "    map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n";
    return conf.str();
}

}  // namespace vigil::test
