import { Link } from "react-router";
import { EmptyState } from "../../components/Feedback";

export default function NotFoundPage() {
  return (
    <EmptyState title="There is no page here">
      <p>
        The address may be old or mistyped. <Link to="/">Go to the overview</Link>.
      </p>
    </EmptyState>
  );
}
