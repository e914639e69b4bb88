// What Tinyx knows about the applications it ships recipes for: the Debian
// package, the program, how init starts it, its files, and how to tell that
// it serves (used by the trial boots and the tests).

export interface Check {
  /** TCP port the app answers on. */
  port: number;
  /** Bytes sent after connecting. */
  send: string;
  /** What the answer must contain. */
  expect: string;
}

export interface Recipe {
  name: string;
  /** Debian packages to fetch; the program's libraries come from their dependencies. */
  packages: string[];
  /** The program, as a path in the image. */
  program: string;
  /** Shell words init runs (exec'd) to start the app. */
  command: string;
  /** Files the app needs that its packages do not give as needed (configuration, a page). */
  files: Record<string, string>;
  /** Empty directories the app expects (its log and state directories). */
  dirs?: string[];
  check: Check;
  /** Guest memory for the app to serve, MiB. */
  memoryMiB: number;
}

const PAGE = '<html><body><h1>Tinyx</h1><p>served from a LightVM Tinyx image</p></body></html>\n';

export const RECIPES: Record<string, Recipe> = {
  nginx: {
    name: 'nginx',
    packages: ['nginx'],
    program: '/usr/sbin/nginx',
    command: '/usr/sbin/nginx -c /etc/nginx/tinyx.conf -g "daemon off;"',
    files: {
      'etc/nginx/tinyx.conf': [
        'worker_processes 1;', 'error_log stderr;', 'pid /tmp/nginx.pid;', 'events { worker_connections 64; }',
        'http {', '  access_log off;', '  default_type text/html;', '  client_body_temp_path /tmp/body;',
        '  proxy_temp_path /tmp/proxy;', '  fastcgi_temp_path /tmp/fastcgi;', '  uwsgi_temp_path /tmp/uwsgi;',
        '  scgi_temp_path /tmp/scgi;', '  server { listen 80; root /www; index index.html; }', '}', '',
      ].join('\n'),
      'www/index.html': PAGE,
    },
    dirs: ['var/log', 'var/log/nginx', 'var/lib', 'var/lib/nginx'],
    check: { port: 80, send: 'GET / HTTP/1.0\r\n\r\n', expect: 'served from a LightVM Tinyx image' },
    memoryMiB: 32,
  },
  'redis-server': {
    name: 'redis-server',
    packages: ['redis-server'],
    program: '/usr/bin/redis-server',
    command: "/usr/bin/redis-server --port 6379 --bind 0.0.0.0 --protected-mode no --save '' --appendonly no --dir /tmp",
    files: {},
    check: { port: 6379, send: 'PING\r\n', expect: '+PONG' },
    memoryMiB: 32,
  },
  'busybox-httpd': {
    name: 'busybox-httpd',
    packages: [],
    program: '/bin/busybox',
    command: '/bin/busybox httpd -f -p 80 -h /www',
    files: { 'www/index.html': PAGE },
    check: { port: 80, send: 'GET / HTTP/1.0\r\n\r\n', expect: 'served from a LightVM Tinyx image' },
    memoryMiB: 16,
  },
};
RECIPES.redis = RECIPES['redis-server']!;
