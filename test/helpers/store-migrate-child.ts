// Connects to the store at argv[2] (a --store URL), migrates it and prints the migrations this process applied as
// JSON. store-migrations.test.ts starts several at once against one fresh PostgreSQL database.
import { migrate } from '../../server/store/db.ts';
import { PgSyncDatabase } from '../../server/store/postgres/driver.ts';

const db = new PgSyncDatabase(process.argv[2]);
try {
  process.stdout.write(JSON.stringify(migrate(db).applied) + '\n');
} finally {
  db.close();
}
