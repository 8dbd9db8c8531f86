#!/usr/bin/env python3
"""Drive a running meao-fcgi over its unix socket with raw FastCGI records:
management records, keep-conn, pipelining, multiplexing refusal, hostile
PARAMS (lying and huge lengths, over the limit), aborts, bodies over the
limit, the slow-request pool, and many concurrent kept connections.
Needs debug_routes = true. Usage: fcgi_probe.py SOCKET. Exit 0 when all pass."""
import socket, struct, sys, time
SOCK = sys.argv[1]
def rec(t, rid, content=b'', pad=0):
    return struct.pack('>BBHHBB', 1, t, rid, len(content), pad, 0) + content + b'\0' * pad
def pair(n, v):
    def l(x): return bytes([x]) if x < 128 else struct.pack('>I', x | 0x80000000)
    return l(len(n)) + l(len(v)) + n + v
def begin(rid, role=1, flags=1): return rec(1, rid, struct.pack('>HB5x', role, flags))
def params(d): return b''.join(pair(k.encode(), v.encode()) for k, v in d.items())
def request(rid, uri='/health', method='GET', body=b'', keep=1, extra=None):
    p = {'REQUEST_METHOD': method, 'REQUEST_URI': uri, 'HTTP_AUTHORIZATION': 'Bearer meao_at_SECRETSECRET'}
    if body: p['CONTENT_LENGTH'] = str(len(body)); p['CONTENT_TYPE'] = 'application/json'
    if extra: p.update(extra)
    out = begin(rid, flags=keep) + rec(4, rid, params(p)) + rec(4, rid)
    for i in range(0, len(body), 65535): out += rec(5, rid, body[i:i+65535])
    return out + rec(5, rid)
def conn():
    s = socket.socket(socket.AF_UNIX); s.connect(SOCK); s.settimeout(5); return s
BUFS = {}  # bytes received but not yet parsed, per socket (responses may share a recv)
def read_records(s, until_end=True, n=None):
    buf = BUFS.pop(s, b''); out = []
    while True:
        while len(buf) >= 8:
            v, t, rid, cl, pl, _ = struct.unpack('>BBHHBB', buf[:8])
            if len(buf) < 8 + cl + pl: break
            out.append((t, rid, buf[8:8+cl])); buf = buf[8+cl+pl:]
            if (until_end and t == 3) or (n and len(out) >= n):
                BUFS[s] = buf
                return out
        try: d = s.recv(65536)
        except socket.timeout: out.append(('timeout',)); return out
        if not d: out.append(('eof',)); return out
        buf += d
def stdout_of(recs): return b''.join(r[2] for r in recs if r[0] == 6)
def status_of(recs):
    so = stdout_of(recs); return so.split(b'\r\n', 1)[0].decode() if so else None
ok = True
def check(name, cond, info=''):
    global ok
    print(('PASS ' if cond else 'FAIL ') + name + ('' if cond else ' ' + repr(info)[:300])); ok &= bool(cond)

s = conn(); s.sendall(rec(9, 0, pair(b'FCGI_MAX_CONNS', b'') + pair(b'FCGI_MPXS_CONNS', b'')))
r = read_records(s, n=1); check('get_values', r[0][0] == 10 and b'FCGI_MPXS_CONNS\x30'[-1:] in r[0][2] and b'FCGI_MAX_CONNS' in r[0][2], r)
s.sendall(rec(42, 0, b'xyz')); r = read_records(s, n=1); check('unknown_type', r[0][0] == 11 and r[0][2][0] == 42, r)
s.sendall(request(1)); r = read_records(s); check('keep_conn request 1', status_of(r) == 'Status: 200 OK' and r[-1][0] == 3, r)
s.sendall(request(2, '/nope')); r = read_records(s); check('keep_conn request 2', status_of(r) == 'Status: 404 Not Found', r)
s.sendall(request(3) + request(4, '/nope')); r = read_records(s) + read_records(s)
check('pipelined', [x[1] for x in r if x[0] == 3] == [3, 4], r)
s.sendall(begin(5) + begin(6) + rec(4, 5) + rec(5, 5)); r = read_records(s) + read_records(s)
ends = [(x[1], x[2][4]) for x in r if x[0] == 3]; check('cant_mpx', (6, 1) in ends and (5, 0) in ends, r)
s.close()

s = conn(); s.sendall(begin(1, role=2, flags=0)); r = read_records(s); r += read_records(s)
check('unknown_role closes', r[0][0] == 3 and r[0][2][4] == 3 and r[-1] == ('eof',), r)
s = conn(); s.sendall(request(1, keep=0)); r = read_records(s) + read_records(s)
check('no keep_conn closes', status_of(r) == 'Status: 200 OK' and r[-1] == ('eof',), r)
s = conn(); data = request(1, keep=1)
for b in data: s.send(bytes([b]))
r = read_records(s); check('byte at a time', status_of(r) == 'Status: 200 OK', r); s.close()
s = conn(); s.sendall(begin(1) + rec(4, 1, b'\x05\x01AB') + rec(4, 1)); r = read_records(s)
check('lying params closes', r[-1] == ('eof',), r)
s = conn(); s.sendall(begin(1) + rec(4, 1, struct.pack('>II', 0xffffffff, 0xffffffff) + b'x') + rec(4, 1)); r = read_records(s)
check('huge 4-byte lengths closes', r[-1] == ('eof',), r)
s = conn(); s.sendall(begin(1) + b''.join(rec(4, 1, b'\x01\x7f' + b'a' * 128) for _ in range(600))); r = read_records(s)
check('params over 64KiB closes', r[-1] == ('eof',), r)
s = conn(); s.sendall(b'\x02' + b'\0' * 15); r = read_records(s); check('bad version closes', r[-1] == ('eof',), r)
s = conn(); s.sendall(request(1)); r = read_records(s); check('worker alive after attacks', status_of(r) == 'Status: 200 OK', r); s.close()
s = conn(); s.sendall(begin(1) + rec(4, 1, params({'REQUEST_METHOD': 'GET', 'REQUEST_URI': '/health'})) + rec(4, 1) + rec(2, 1))
r = read_records(s); check('abort before stdin end', r[-1][0] == 3 and not stdout_of(r), r); s.close()
big = b'{"text":"' + b'a' * 3000000 + b'"}'
p = params({'REQUEST_METHOD': 'POST', 'REQUEST_URI': '/__debug/echo', 'CONTENT_TYPE': 'application/json'})
s = conn(); s.sendall(begin(1) + rec(4, 1, p) + rec(4, 1) + b''.join(rec(5, 1, big[i:i+65535]) for i in range(0, len(big), 65535)) + rec(5, 1))
r = read_records(s); check('no CONTENT_LENGTH, body over limit -> 413', status_of(r) == 'Status: 413 Payload Too Large', status_of(r)); s.close()
s = conn(); s.sendall(request(1, '/__debug/echo', 'POST', b'{"text":"hello"}')); r = read_records(s)
check('post body', b'"text":"hello"' in stdout_of(r), r); s.close()
s = conn(); s.sendall(request(1, '/__debug/echo', 'POST', big)); r = read_records(s)
check('declared body over limit -> 413', status_of(r) == 'Status: 413 Payload Too Large', status_of(r)); s.close()
# slow route: client vanishes mid-request; then abort mid-request
s = conn(); s.sendall(request(1, '/__debug/sleep?ms=300', extra={'QUERY_STRING': 'ms=300'})); time.sleep(0.05); s.close()
s = conn(); s.sendall(request(1, '/__debug/sleep?ms=300', extra={'QUERY_STRING': 'ms=300'})); time.sleep(0.05); s.sendall(rec(2, 1))
r = read_records(s); check('abort while slow request runs', r[-1][0] == 3 and not stdout_of(r), r)
s.sendall(request(2)); r = read_records(s); check('connection usable after abort', status_of(r) == 'Status: 200 OK', r); s.close()
s = conn(); s.sendall(request(1, '/__debug/sleep?ms=200', extra={'QUERY_STRING': 'ms=200'})); r = read_records(s)
check('slow request via pool', b'sleptMs' in stdout_of(r), r); s.close()
socks = [conn() for _ in range(300)]
for i, x in enumerate(socks): x.sendall(request(1))
good = sum(status_of(read_records(x)) == 'Status: 200 OK' for x in socks)
check('300 concurrent kept connections', good == 300, good)
for x in socks: x.close()
time.sleep(0.4)
print('ALL OK' if ok else 'SOME FAILED')
sys.exit(0 if ok else 1)
