// A second real client of the HTTPS proxy (tests/integration/test_proxy_https.py):
// Node's own http, https and tls modules, with the proxy reached over TLS the
// way an HTTPS-proxy agent does it (tls.connect to the proxy, then HTTP on it).
//   node https_proxy_client.js PROXY_PORT PROXY_CA USER PASS get URL
//   node https_proxy_client.js PROXY_PORT PROXY_CA USER PASS connect HOST PORT TARGET_CA PATH
// Prints "STATUS <code>" and then the body; exits 0 when a response came.
// No `agent` option anywhere: with agent: false Node ignores createConnection
// and would dial the origin directly.
'use strict';
const http = require('http');
const https = require('https');
const tls = require('tls');
const fs = require('fs');

const [port, proxyCa, user, pass, mode, ...rest] = process.argv.slice(2);
const auth = 'Basic ' + Buffer.from(user + ':' + pass).toString('base64');

function toProxy() {
	return tls.connect({ host: '127.0.0.1', port: Number(port), servername: 'localhost',
			     ca: fs.readFileSync(proxyCa), ALPNProtocols: ['http/1.1'] });
}

function done(res) {
	const chunks = [];
	res.on('data', (c) => chunks.push(c));
	res.on('end', () => {
		process.stdout.write('STATUS ' + res.statusCode + '\n');
		process.stdout.write(Buffer.concat(chunks));
		process.exit(0);
	});
}

function fail(e) {
	process.stdout.write('ERROR ' + e.message + '\n');
	process.exit(1);
}

if (mode === 'get') {
	// absolute-form request to the proxy, over the TLS connection
	const url = new URL(rest[0]);
	const req = http.request({ path: url.href, /* absolute form */
				   headers: { 'Proxy-Authorization': auth, Host: url.host },
				   createConnection: toProxy }, done);
	req.on('error', fail);
	req.end();
} else {
	const [host, tport, targetCa, path] = rest;
	const req = http.request({ method: 'CONNECT', path: host + ':' + tport,
				   headers: { 'Proxy-Authorization': auth, Host: host + ':' + tport },
				   createConnection: toProxy });
	req.on('connect', (res, socket) => {
		if (res.statusCode !== 200) {
			process.stdout.write('STATUS ' + res.statusCode + '\n');
			process.exit(0);
		}
		// TLS to the target inside the proxy's TLS
		const inner = https.request({ host, port: Number(tport), path, servername: 'localhost',
					      ca: fs.readFileSync(targetCa),
					      createConnection: () => tls.connect({
						      socket, servername: 'localhost',
						      ca: fs.readFileSync(targetCa) }) }, done);
		inner.on('error', fail);
		inner.end();
	});
	req.on('response', (res) => { process.stdout.write('STATUS ' + res.statusCode + '\n');
				      process.exit(0); });
	req.on('error', fail);
	req.end();
}
setTimeout(() => fail(new Error('timeout')), 20000);
