/**
 * An S3-compatible server for tests: s3rver (npm, a Node implementation of the S3 REST API; MinIO is not packaged),
 * run as its own process so a test can start it inside a network namespace:
 *   node --import tsx test/helpers/s3-server-runner.ts ADDRESS PORT DIR BUCKET
 * Prints "s3 listening ADDRESS:PORT" once the bucket exists. Credentials: S3RVER / S3RVER (s3rver's defaults).
 */
import S3rver from 's3rver';

const [address, port, directory, bucket] = process.argv.slice(2);
if (!address || !port || !directory || !bucket) {
  console.error('usage: s3-server-runner.ts ADDRESS PORT DIR BUCKET');
  process.exit(2);
}
const server = new S3rver({ address, port: Number(port), directory, silent: true, configureBuckets: [{ name: bucket }] } as never);
await server.run();
console.log(`s3 listening ${address}:${port}`);
const stop = () => { server.close().finally(() => process.exit(0)); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
